"""Backups: export the database to a location, list and prune them, restore one into an empty database."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog
from pydantic import ValidationError

from mlplatform.backups.export import export_database
from mlplatform.backups.load import check_target, load_database
from mlplatform.backups.location import BackupFolder, BackupLocation
from mlplatform.backups.manifest import MANIFEST, BackupError, Manifest
from mlplatform.backups.progress import Reporter
from mlplatform.clock import utcnow
from mlplatform.config import redact_url
from mlplatform.ids import new_id
from mlplatform.settings import BackupSettings, DatabaseSettings, StorageSettings
from mlplatform.stores.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    StorageUnavailableError,
    create_artifact_store,
)

log = structlog.get_logger(__name__)
DEFAULT_PREFIX = "backups"


def new_backup_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%S')}.{now.microsecond // 1000:03d}Z-{new_id()[-8:]}"


def join_url(url: str, path: str) -> str:
    """`path` appended to a file:// or s3:// URL's path, its query kept: s3://b/p?endpoint=… → s3://b/p/x?…"""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{path}"))


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    created_schema: bool  # the target was new and got the backup's schema revision


class BackupService:
    """Backups of the database `database` describes, to `storage` (under `backups/`) or another location."""

    def __init__(
        self,
        *,
        database: DatabaseSettings,
        storage: StorageSettings,
        settings: BackupSettings,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.database = database
        self.storage = storage
        self.settings = settings
        self.artifacts = artifacts
        self._opened: list[ArtifactStore] = []

    def _store(self, url: str) -> ArtifactStore:
        # The location's credentials are those of `storage` (one set of keys per deployment).
        try:
            settings = StorageSettings.model_validate({**self.storage.model_dump(), "url": url})
        except ValidationError:
            raise ValueError(
                f"{redact_url(url)}: a backup location must be file://PATH or s3://BUCKET[/PREFIX]?endpoint=..."
            ) from None
        store = create_artifact_store(settings)
        self._opened.append(store)
        return store

    def location(self, url: str | None = None) -> BackupLocation:
        """`url`, else `backup.location`, else the configured storage under `backups/`."""
        url = url or self.settings.location
        if url is not None:
            return BackupLocation(self._store(url), "", redact_url(url))
        store = self.artifacts or self._store(self.storage.url)
        self.artifacts = store
        return BackupLocation(
            store, f"{DEFAULT_PREFIX}/", redact_url(join_url(self.storage.url, DEFAULT_PREFIX))
        )

    def folder(self, source: str, *, location: str | None = None) -> BackupFolder:
        """A backup by its id (at `location`, or the default one), or by its own URL (file://…, s3://…)."""
        if "://" in source:
            return BackupFolder(self._store(source), "", redact_url(source))
        return self.location(location).folder(source)

    async def create(
        self, *, location: BackupLocation, with_logs: bool, reporter: Reporter | None = None
    ) -> tuple[Manifest, BackupFolder]:
        """Export every table from one snapshot, upload the files, then the manifest."""
        reporter = reporter or Reporter()
        now = utcnow()
        backup_id = new_backup_id(now)
        folder = location.folder(backup_id)
        with tempfile.TemporaryDirectory(prefix="mlplatform-backup-") as scratch:
            manifest = await asyncio.to_thread(
                export_database,
                self.database,
                Path(scratch),
                backup_id=backup_id,
                created_at=now,
                with_logs=with_logs,
                reporter=reporter,
            )
            reporter.phase(f"uploading to {folder.where}", total=manifest.total_bytes)
            try:
                for entry in manifest.tables:
                    await folder.store.put_file(folder.key(entry.file), Path(scratch) / entry.file)
                    reporter.advance(entry.bytes)
                await folder.store.put(folder.key(MANIFEST), manifest.dumps())
            except BaseException:
                await self._discard(location, backup_id)
                raise
        log.info(
            "backup written",
            backup=backup_id,
            where=folder.where,
            rows=manifest.total_rows,
            bytes=manifest.total_bytes,
        )
        return manifest, folder

    async def _discard(self, location: BackupLocation, backup_id: str) -> None:
        try:
            await asyncio.shield(location.delete(backup_id))
        except Exception as exc:  # the manifest was never written: it stays an incomplete backup
            log.warning(
                "incomplete backup left", backup=backup_id, error=f"{type(exc).__name__}: {exc}"[:200]
            )

    async def restore(self, folder: BackupFolder, *, reporter: Reporter | None = None) -> Restored:
        """Check the backup whole (manifest, every file, every checksum) and the target empty, then load it
        in one transaction. A refusal raises `BackupError` with the database untouched."""
        reporter = reporter or Reporter()
        manifest = await folder.manifest()
        await asyncio.to_thread(check_target, self.database, manifest)
        with tempfile.TemporaryDirectory(prefix="mlplatform-restore-") as scratch:
            reporter.phase(f"downloading from {folder.where}", total=manifest.total_bytes)
            for entry in manifest.tables:
                await self._download(
                    folder, entry.file, Path(scratch) / entry.file, entry.sha256, entry.bytes, reporter
                )
            created = await asyncio.to_thread(load_database, self.database, Path(scratch), manifest, reporter)
        log.info("backup restored", backup=manifest.id, rows=manifest.total_rows, revision=manifest.revision)
        return Restored(manifest=manifest, created_schema=created)

    async def _download(
        self, folder: BackupFolder, name: str, path: Path, sha256: str, size: int, reporter: Reporter
    ) -> None:
        digest = hashlib.sha256()
        written = 0
        try:
            with path.open("wb") as handle:
                async for chunk in folder.store.get(folder.key(name)):
                    digest.update(chunk)
                    written += len(chunk)
                    handle.write(chunk)
                    reporter.advance(len(chunk))
        except ArtifactNotFoundError:
            raise BackupError(f"{folder.where}: {name} is missing: the backup is partial") from None
        if written != size or digest.hexdigest() != sha256:
            raise BackupError(
                f"{folder.where}: {name} does not match the manifest ({written} bytes, sha256 "
                f"{digest.hexdigest()[:12]}…; expected {size} bytes, {sha256[:12]}…): the backup is corrupt"
            )

    async def prune(
        self, location: BackupLocation, *, keep: int, stale_after: timedelta | None = None
    ) -> list[str]:
        """Delete complete backups past the `keep` newest, and incomplete ones (no manifest) untouched for
        `stale_after` (default `backup.timeout-seconds`: their writer is gone). The ids deleted."""
        stale_after = stale_after or timedelta(seconds=self.settings.timeout_seconds)
        entries = await location.entries()
        complete = [e for e in entries if e.complete]
        doomed = [e.id for e in complete[: max(0, len(complete) - keep)]] if keep > 0 else []
        cutoff = utcnow() - stale_after
        doomed += [
            e.id
            for e in entries
            if not e.complete and e.last_modified is not None and e.last_modified < cutoff
        ]
        for backup_id in sorted(doomed):
            await location.delete(backup_id)
        if doomed:
            log.info("backups pruned", deleted=sorted(doomed), where=location.where)
        return sorted(doomed)

    async def close(self) -> None:
        for store in self._opened:
            with contextlib.suppress(StorageUnavailableError):
                await store.close()
        self._opened.clear()
