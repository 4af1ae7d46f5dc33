"""Registry use cases: register a version atomically, stage and alias it, browse, download, delete."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import structlog

from mlplatform import formats
from mlplatform.clock import utcnow
from mlplatform.errors import InvalidInput, NotFound, Unavailable, UnsupportedMediaType
from mlplatform.formats.base import InvalidArtifactError, ModelDescription, UnsafeArtifactError
from mlplatform.ids import new_id
from mlplatform.registry.events import RegistryWatcher
from mlplatform.registry.refs import ARCHIVED, ModelRef, check_alias, check_name, parse_ref
from mlplatform.registry.schemas import (
    AliasesAt,
    HistoryEntry,
    Lineage,
    ModelRead,
    ModelUpdate,
    Page,
    VersionMetadata,
    VersionRead,
)
from mlplatform.registry.snapshot import ModelEntry, Route, RouteVariant, VersionEntry, resolve
from mlplatform.registry.store import ModelFilter, NewVersion, RegistryStore
from mlplatform.settings import ModelsSettings
from mlplatform.stores.artifacts.base import ArtifactStore, StorageUnavailableError

log = structlog.get_logger(__name__)
CHUNK = 1024 * 1024


# Loads an artifact the way serving will and predicts with it: returns the runtime report to record on the
# version (which engine serves it, and the measured difference), or raises when the model cannot predict.
Assess = Callable[[Path, ModelDescription, np.ndarray | None], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Upload:
    source: BinaryIO
    filename: str
    metadata: VersionMetadata
    reference: BinaryIO | None = None  # a CSV or Parquet reference sample for drift checks


# Stores a checked reference sample once its version exists.
KeepReference = Callable[[VersionRead], Awaitable[None]]
# Given a new version's signature and its upload, checks the reference sample for drift (the `reference`
# part, or what the metadata names) before anything is stored: raises `InvalidInput` to refuse the upload,
# returns what keeps it, or None when the version has none. Monitoring provides it (`create_app` wires it).
PrepareReference = Callable[[ModelDescription, Upload], Awaitable[KeepReference | None]]


def _copy(source: BinaryIO, target: Path) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class RegistryService:
    def __init__(
        self,
        *,
        store: RegistryStore,
        artifacts: ArtifactStore,
        watcher: RegistryWatcher,
        settings: ModelsSettings,
        assess: Assess | None = None,
        workdir: Path | None = None,
        prepare_reference: PrepareReference | None = None,
    ) -> None:
        self.store = store
        self.prepare_reference = prepare_reference
        self.artifacts = artifacts
        self.watcher = watcher
        self.settings = settings
        self.assess = assess
        self.workdir = workdir

    # --- resolution -------------------------------------------------------------------------------------

    def resolve(self, reference: str, field: str = "model") -> VersionEntry:
        """Resolve any reference form against this instance's snapshot (no I/O: the predict path)."""
        return self.watcher.snapshot.resolve(parse_ref(reference, field))

    def route(self, reference: str) -> Route | None:
        """The running experiment's route when `reference` is a bare model name it covers (an explicit
        version or alias is served as asked). No I/O, and one dictionary test when nothing runs."""
        routes = self.watcher.snapshot.routes
        return routes.get(reference) if routes else None

    def variant_entry(self, model: str, variant: RouteVariant) -> VersionEntry:
        """The version a route's variant serves (resolved like `model/number`)."""
        return self.watcher.snapshot.resolve(ModelRef(name=model, version=variant.version))

    async def record_event(self, name: str, action: str, *, actor: str, details: dict[str, Any]) -> None:
        """Add an entry to the model's history (experiments record starts, steps, promotions, rollbacks)."""
        await self.store.record(name, action, actor, utcnow(), details)

    async def model_entry(self, name: str) -> ModelEntry | None:
        """The model's versions and aliases as the snapshot holds them, read from the database."""
        return await self.store.entry(name)

    async def resolve_fresh(self, reference: str | ModelRef, field: str = "model") -> VersionEntry:
        """The same rule against the database (writes must not act on a stale snapshot)."""
        ref = parse_ref(reference, field) if isinstance(reference, str) else reference
        return resolve(ref, await self.store.entry(ref.name))

    # --- registration -----------------------------------------------------------------------------------

    async def register(self, name: str, upload: Upload, *, actor: str) -> VersionRead:
        """Validate and store the artifact, then give it the next version number, or leave nothing behind."""
        check_name(name)
        meta = upload.metadata
        parent_id = None
        if meta.parent:
            try:
                parent_id = (await self.resolve_fresh(meta.parent, "metadata.parent")).id
            except NotFound as exc:
                raise InvalidInput(
                    exc.message, details=[{"field": "metadata.parent", "problem": exc.message}]
                ) from None
        with tempfile.TemporaryDirectory(prefix="mlplatform-upload-", dir=self.workdir) as folder:
            workdir = Path(folder)
            received = workdir / "upload"
            await asyncio.to_thread(_copy, upload.source, received)
            inspected = await self._inspect(received, upload.filename, meta, workdir)
            description = inspected.description
            reference = self._reference_sample(meta, len(description.features))
            keep_reference = await self._prepare_reference(description, upload)
            runtime = await self._assess(inspected.path, description, meta)
            sha256, size = await asyncio.to_thread(_sha256, inspected.path)
            prefix = f"models/{name}/{new_id()}"
            keys = [f"{prefix}/{description.file_name}"]
            try:
                await self.artifacts.put_file(keys[0], inspected.path)
                if reference is not None:
                    keys.append(f"{prefix}/reference.npy")
                    await self.artifacts.put(keys[1], reference)
                created = await self.store.create_version(
                    NewVersion(
                        name=name,
                        actor=actor,
                        at=utcnow(),
                        description=description,
                        artifact_key=keys[0],
                        artifact_size=size,
                        artifact_sha256=sha256,
                        reference_key=keys[1] if reference is not None else None,
                        runtime=runtime,
                        version_description=meta.description,
                        tags=meta.tags,
                        metrics=meta.metrics,
                        parent_id=parent_id,
                        training_dataset_id=meta.training_dataset_id,
                        training_job_id=meta.training_job_id,
                    )
                )
            except BaseException as exc:
                await self._remove(keys)
                if isinstance(exc, StorageUnavailableError):
                    raise Unavailable(f"artifact storage is unavailable: {exc}") from None
                raise
        log.info("version registered", model=name, version=created.version, framework=created.framework)
        await self.watcher.announce(name)
        if keep_reference is not None:
            await self._keep_reference(keep_reference, created)
        return created

    async def _prepare_reference(self, description: ModelDescription, upload: Upload) -> KeepReference | None:
        if self.prepare_reference is None:
            if upload.reference is not None:
                problem = "this server keeps no reference samples"
                raise InvalidInput(
                    f"reference: {problem}", details=[{"field": "reference", "problem": problem}]
                )
            return None
        return await self.prepare_reference(description, upload)

    @staticmethod
    async def _keep_reference(keep: KeepReference, created: VersionRead) -> None:
        try:
            await keep(created)
        except Exception as exc:  # the version stands; its reference can be set again (PUT …/reference)
            log.error(
                "version registered without its reference sample; set it again",
                model=created.name,
                version=created.version,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    async def _inspect(
        self, path: Path, filename: str, meta: VersionMetadata, workdir: Path
    ) -> formats.InspectedArtifact:
        hints = formats.ModelHints(
            feature_names=meta.feature_names,
            feature_types=meta.feature_types,
            task=meta.task,
            classes=meta.classes,
        )
        try:
            return await asyncio.to_thread(
                formats.inspect_artifact,
                path,
                filename=filename,
                allow_pickle=self.settings.allow_pickle,
                hints=hints,
                workdir=workdir,
            )
        except UnsafeArtifactError as exc:
            raise UnsupportedMediaType(str(exc), details=[{"field": "file", "problem": str(exc)}]) from None
        except InvalidArtifactError as exc:
            raise InvalidInput(str(exc), details=[{"field": "file", "problem": str(exc)}]) from None

    async def _assess(
        self, path: Path, description: ModelDescription, meta: VersionMetadata
    ) -> dict[str, Any]:
        if self.assess is None:
            return {}
        sample = np.asarray(meta.reference_sample, dtype=np.float64) if meta.reference_sample else None
        try:
            return await asyncio.to_thread(self.assess, path, description, sample)
        except Exception as exc:  # the artifact parsed but cannot predict: refuse it now, not at serving time
            problem = f"the model loads but cannot predict: {type(exc).__name__}: {exc}"[:500]
            raise InvalidInput(problem, details=[{"field": "file", "problem": problem}]) from None

    @staticmethod
    def _reference_sample(meta: VersionMetadata, width: int) -> bytes | None:
        if meta.reference_sample is None:
            return None
        rows = meta.reference_sample
        if not rows or any(len(row) != width for row in rows):
            problem = f"every row must have {width} values, one per feature"
            raise InvalidInput(
                f"metadata.reference_sample: {problem}",
                details=[{"field": "metadata.reference_sample", "problem": problem}],
            )
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(rows, dtype=np.float64), allow_pickle=False)
        return buffer.getvalue()

    async def _remove(self, keys: list[str]) -> None:
        for key in keys:
            try:
                await self.artifacts.delete(key)
            except Exception as exc:  # the orphan sweep at start-up removes what is left here
                log.warning(
                    "could not remove an artifact; the orphan sweep will", key=key, error=str(exc)[:200]
                )

    # --- stages, aliases, edits ---------------------------------------------------------------------------

    async def set_stage(self, name: str, version: int, stage: str, *, actor: str) -> VersionRead:
        if stage == ARCHIVED:
            await self.store.archive(name, version, actor, utcnow())
        else:
            await self.store.set_alias(name, stage, version, actor, utcnow())
        await self.watcher.announce(name)
        return await self.store.get_version(name, version)

    async def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> VersionRead:
        check_alias(alias)
        found = await self.store.get_version(name, version)
        if found.status == ARCHIVED:
            raise InvalidInput(
                f"version {version} of {name!r} is archived: stage it again before pointing an alias at it",
                details=[{"field": "version", "problem": "archived"}],
            )
        await self.store.set_alias(name, alias, version, actor, utcnow())
        await self.watcher.announce(name)
        return await self.store.get_version(name, version)

    async def remove_alias(self, name: str, alias: str, *, actor: str) -> None:
        check_alias(alias)
        entry = await self.store.entry(name)
        if entry is None or alias not in entry.aliases:
            raise NotFound(f"model {name!r} has no alias {alias!r}", details={"field": "alias"})
        await self.store.set_alias(name, alias, None, actor, utcnow())
        await self.watcher.announce(name)

    async def update_model(self, name: str, change: ModelUpdate) -> ModelRead:
        await self.store.update_model(name, description=change.description, tags=change.tags)
        return await self.store.get_model(name)

    async def update_version(self, name: str, version: int, change: ModelUpdate) -> VersionRead:
        await self.store.update_version(name, version, description=change.description, tags=change.tags)
        await self.watcher.announce(name)
        return await self.store.get_version(name, version)

    # --- reading ------------------------------------------------------------------------------------------

    async def get_model(self, name: str) -> ModelRead:
        return await self.store.get_model(name)

    async def list_models(self, where: ModelFilter, *, limit: int, offset: int) -> Page[ModelRead]:
        return await self.store.list_models(where, limit, offset)

    async def get_version(self, name: str, version: int) -> VersionRead:
        return await self.store.get_version(name, version)

    async def list_versions(self, name: str, *, limit: int, offset: int) -> Page[VersionRead]:
        return await self.store.list_versions(name, limit, offset)

    async def history(self, name: str, *, limit: int, offset: int) -> Page[HistoryEntry]:
        return await self.store.history(name, limit, offset)

    async def aliases_at(self, name: str, at: datetime) -> AliasesAt:
        return await self.store.aliases_at(name, at)

    async def lineage(self, name: str, version: int) -> Lineage:
        start = await self.store.get_version(name, version)
        entries = await self.store.entries()
        by_id = {v.id: v for entry in entries.values() for v in entry.versions.values()}
        reads: dict[str, VersionRead] = {}

        async def read(version_id: str) -> VersionRead:
            if version_id not in reads:
                found = by_id[version_id]
                reads[version_id] = await self.store.get_version(found.name, found.version)
            return reads[version_id]

        parents = []
        seen = {start.id}
        current = start
        while current.parent and current.parent in by_id and current.parent not in seen:
            seen.add(current.parent)
            current = await read(current.parent)
            parents.append(current)
        children = [await read(v.id) for v in by_id.values() if v.parent_id == start.id]
        return Lineage.model_validate(
            {
                "id": start.id,
                "parents": [p.model_dump() for p in parents],
                "children": [c.model_dump() for c in children],
                "training_dataset_id": start.training_dataset_id,
                "training_job_id": start.training_job_id,
            }
        )

    async def download(self, name: str, version: int) -> tuple[VersionRead, AsyncIterator[bytes]]:
        found = await self.store.get_version(name, version)
        entry = await self.store.entry(name)
        assert entry is not None
        key = entry.versions[version].artifact_key
        try:
            await self.artifacts.head(key)
        except StorageUnavailableError as exc:
            raise Unavailable(f"artifact storage is unavailable: {exc}") from None
        return found, self.artifacts.get(key)

    # --- deletion -----------------------------------------------------------------------------------------

    async def delete_version(self, name: str, version: int, *, purge: bool, actor: str) -> None:
        if purge:
            await self._remove(await self.store.purge_version(name, version, actor, utcnow()))
        else:
            await self.store.archive(name, version, actor, utcnow())
        await self.watcher.announce(name)

    async def delete_model(self, name: str, *, purge: bool, actor: str) -> None:
        if purge:
            await self._remove(await self.store.purge_model(name, actor, utcnow()))
        else:
            entry = await self.store.entry(name)
            if entry is None:
                raise NotFound(f"no model named {name!r}", details={"field": "name"})
            for number in sorted(entry.versions):
                await self.store.archive(name, number, actor, utcnow())
        await self.watcher.announce(name)

    async def sweep_orphans(self, *, min_age: timedelta = timedelta(hours=1)) -> list[str]:
        """Remove stored objects under models/ that no version owns and that are older than `min_age`
        (younger ones may belong to an upload still in flight on another instance)."""
        owned = await self.store.storage_keys()
        orphans = await self.artifacts.remove_unowned("models/", owned, older_than=utcnow() - min_age)
        if orphans:
            log.warning("removed orphaned artifacts", count=len(orphans), keys=orphans[:20])
        return orphans
