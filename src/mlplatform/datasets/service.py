"""Dataset use cases: upload within the limits atomically, browse, download, sample, delete, sweep orphans."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy.typing as npt
import structlog

from mlplatform.clock import utcnow
from mlplatform.datasets import tabular
from mlplatform.datasets.schemas import DatasetMetadata, DatasetRead, Page
from mlplatform.datasets.store import DatasetStore
from mlplatform.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable
from mlplatform.ids import new_id
from mlplatform.names import NAME_RULE, is_allowed_name
from mlplatform.settings import InputLimitSettings
from mlplatform.stores.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    InvalidKeyError,
    StorageUnavailableError,
    check_key,
)

log = structlog.get_logger(__name__)
CHUNK = 1024 * 1024
PREFIX = "datasets/"
_LIMIT_SETTINGS = {"rows": "security.limits.max-upload-rows", "bytes": "security.limits.max-upload-size"}


def check_name(name: str, field: str = "name") -> str:
    """The allow-list for dataset names: a name becomes one segment of the storage key."""
    if not is_allowed_name(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InvalidInput(
            f"dataset name {shown!r} is not allowed: {NAME_RULE}",
            details=[{"field": field, "problem": NAME_RULE}],
        )
    return name


def storage_key(name: str, dataset_id: str, format: str) -> str:
    """The server-generated key of a dataset's file, checked against the artifact key allow-list."""
    try:
        return check_key(f"{PREFIX}{check_name(name)}/{dataset_id}/data.{format}")
    except InvalidKeyError as exc:
        raise InvalidInput(str(exc), details=[{"field": "name", "problem": str(exc)}]) from None


@dataclass(frozen=True, slots=True)
class SampledTable:
    rows: int  # rows in the whole table
    columns: dict[str, npt.NDArray[Any]]  # a uniform sample of min(n, rows) rows of the wanted columns


def _table_problem(exc: tabular.TableError, field: str) -> InvalidInput:
    detail: dict[str, Any] = {"field": field, "problem": str(exc)}
    if isinstance(exc, tabular.MissingColumnsError):
        detail["missing"] = exc.missing
    return InvalidInput(f"{field}: {exc}", details=[detail])


def _too_large(exc: tabular.TooLargeError) -> PayloadTooLarge:
    setting = _LIMIT_SETTINGS[exc.unit]
    problem = f"more than {exc.limit} {exc.unit} ({setting})"
    return PayloadTooLarge(
        f"file: {problem}", details=[{"field": "file", "problem": problem, f"limit_{exc.unit}": exc.limit}]
    )


class DatasetService:
    def __init__(
        self,
        *,
        store: DatasetStore,
        artifacts: ArtifactStore,
        limits: InputLimitSettings,
        workdir: Path | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.limits = limits
        self.workdir = workdir

    async def upload(
        self, *, name: str, source: BinaryIO, metadata: DatasetMetadata, actor: str
    ) -> DatasetRead:
        """Check the name, the bytes and the rows, profile the table, then store the file and its record;
        a refused or failed upload leaves neither behind."""
        check_name(name)
        with tempfile.TemporaryDirectory(prefix="mlplatform-dataset-", dir=self.workdir) as folder:
            path = Path(folder) / "upload"
            try:
                received = await asyncio.to_thread(
                    tabular.receive, source, path, max_bytes=self.limits.max_upload_size
                )
                table = await asyncio.to_thread(
                    tabular.profile, path, received.format, max_rows=self.limits.max_upload_rows
                )
            except tabular.TooLargeError as exc:
                raise _too_large(exc) from None
            except tabular.TableError as exc:
                raise InvalidInput(f"file: {exc}", details=[{"field": "file", "problem": str(exc)}]) from None
            dataset_id = new_id()
            dataset = DatasetRead(
                id=dataset_id,
                name=name,
                format=received.format,
                size_bytes=received.size,
                sha256=received.sha256,
                rows=table.rows,
                columns=table.columns,
                storage_key=storage_key(name, dataset_id, received.format),
                description=metadata.description,
                tags=metadata.tags,
                created_at=utcnow(),
                created_by=actor,
            )
            try:
                await self.artifacts.put_file(dataset.storage_key, path)
                await self.store.create(dataset)
            except BaseException as exc:
                await self._remove(dataset.storage_key)
                if isinstance(exc, StorageUnavailableError):
                    raise Unavailable(f"artifact storage is unavailable: {exc}") from None
                raise
        log.info("dataset uploaded", dataset=dataset_id, name=name, rows=table.rows, format=received.format)
        return dataset

    async def sample_upload(
        self, *, source: BinaryIO, columns: Sequence[str], n: int, seed: int, field: str = "file"
    ) -> SampledTable:
        """Some columns of an uploaded CSV or Parquet table (checked within the upload limits like a dataset,
        not stored): a uniform sample of at most `n` rows. Missing columns are named in the error."""
        with tempfile.TemporaryDirectory(prefix="mlplatform-table-", dir=self.workdir) as folder:
            path = Path(folder) / "upload"
            try:
                received = await asyncio.to_thread(
                    tabular.receive, source, path, max_bytes=self.limits.max_upload_size
                )
                table = await asyncio.to_thread(
                    tabular.profile, path, received.format, max_rows=self.limits.max_upload_rows
                )
                sampled = await asyncio.to_thread(
                    tabular.sample_columns, path, received.format, columns, rows=table.rows, n=n, seed=seed
                )
            except tabular.TooLargeError as exc:
                raise _too_large(exc) from None
            except tabular.TableError as exc:
                raise _table_problem(exc, field) from None
        return SampledTable(rows=table.rows, columns=sampled)

    async def sample(
        self, *, dataset_id: str, columns: Sequence[str], n: int, seed: int, field: str = "dataset"
    ) -> SampledTable:
        """Some columns of a stored dataset: a uniform sample of at most `n` rows (the file is copied to a
        temporary folder and read a batch at a time)."""
        found, chunks = await self.download(dataset_id)
        with tempfile.TemporaryDirectory(prefix="mlplatform-table-", dir=self.workdir) as folder:
            path = Path(folder) / f"data.{found.format}"
            with path.open("wb") as out:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            try:
                sampled = await asyncio.to_thread(
                    tabular.sample_columns, path, found.format, columns, rows=found.rows, n=n, seed=seed
                )
            except tabular.TableError as exc:
                raise _table_problem(exc, field) from None
        return SampledTable(rows=found.rows, columns=sampled)

    async def get(self, dataset_id: str) -> DatasetRead:
        return await self.store.get(dataset_id)

    async def list_datasets(self, *, name: str | None, limit: int, offset: int) -> Page[DatasetRead]:
        return await self.store.list_datasets(name, limit, offset)

    async def download(self, dataset_id: str) -> tuple[DatasetRead, AsyncIterator[bytes]]:
        found = await self.store.get(dataset_id)
        try:
            await self.artifacts.head(found.storage_key)
        except StorageUnavailableError as exc:
            raise Unavailable(f"artifact storage is unavailable: {exc}") from None
        except ArtifactNotFoundError:
            raise NotFound(
                f"the file of dataset {dataset_id!r} is missing from storage", details={"field": "id"}
            ) from None
        return found, self.artifacts.get(found.storage_key)

    async def delete(self, dataset_id: str, *, actor: str) -> None:
        """Remove the record, then its file (the orphan sweep retries a file that could not be removed)."""
        key = await self.store.delete(dataset_id)
        await self._remove(key)
        log.info("dataset deleted", dataset=dataset_id, actor=actor)

    async def _remove(self, key: str) -> None:
        try:
            await self.artifacts.delete(key)
        except Exception as exc:  # the orphan sweep at start-up removes what is left here
            log.warning(
                "could not remove a dataset file; the orphan sweep will", key=key, error=str(exc)[:200]
            )

    async def sweep_orphans(self, *, min_age: timedelta = timedelta(hours=1)) -> list[str]:
        """Remove stored files under datasets/ that no record owns and that are older than `min_age`
        (younger ones may belong to an upload still in flight on another instance)."""
        owned = await self.store.storage_keys()
        orphans = await self.artifacts.remove_unowned(PREFIX, owned, older_than=utcnow() - min_age)
        if orphans:
            log.warning("removed orphaned dataset files", count=len(orphans), keys=orphans[:20])
        return orphans
