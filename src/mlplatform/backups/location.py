"""Where backups live: a storage location (the configured storage under `backups/`, or any file:// or s3://
URL), one folder per backup named by its id, the manifest written last."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from mlplatform.backups.manifest import BACKUP_ID, MANIFEST, BackupError, Manifest
from mlplatform.stores.artifacts import ArtifactNotFoundError, ArtifactStore


@dataclass(frozen=True)
class BackupFolder:
    """One backup's objects: `{prefix}manifest.json` and a file per table."""

    store: ArtifactStore
    prefix: str  # "" or ending in "/"
    where: str  # for messages: the folder's URL, no secrets

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def manifest(self) -> Manifest:
        try:
            data = await self.store.read_bytes(self.key(MANIFEST))
        except ArtifactNotFoundError:
            raise BackupError(
                f"{self.where}: no {MANIFEST}: this backup is incomplete (its writer stopped before the "
                "end) or this is not a backup"
            ) from None
        return Manifest.loads(data, where=self.where)


@dataclass(frozen=True)
class BackupEntry:
    """A backup found at a location; `manifest` None when it is incomplete."""

    id: str
    manifest: Manifest | None
    objects: int
    size: int
    last_modified: datetime | None

    @property
    def complete(self) -> bool:
        return self.manifest is not None


@dataclass(frozen=True)
class BackupLocation:
    store: ArtifactStore
    prefix: str  # "" or ending in "/"
    where: str  # the location's URL, no secrets

    def folder(self, backup_id: str) -> BackupFolder:
        if not BACKUP_ID.match(backup_id):
            raise BackupError(f"{backup_id!r} is not a backup id (like 20250102T030405.678Z-0123abcd)")
        return BackupFolder(self.store, f"{self.prefix}{backup_id}/", f"{self.where.rstrip('/')}/{backup_id}")

    async def entries(self) -> list[BackupEntry]:
        """Every backup here, oldest first (ids sort by time); other objects are ignored."""
        found: dict[str, list[tuple[str, int, datetime | None]]] = {}
        for info in await self.store.list(self.prefix):
            backup_id, _, rest = info.key.removeprefix(self.prefix).partition("/")
            if BACKUP_ID.match(backup_id) and rest:
                found.setdefault(backup_id, []).append((rest, info.size, info.last_modified))
        entries = []
        for backup_id, objects in sorted(found.items()):
            manifest = None
            if any(name == MANIFEST for name, _, _ in objects):
                with contextlib.suppress(BackupError):  # an unreadable manifest: listed as incomplete
                    manifest = await self.folder(backup_id).manifest()
            times = [t for _, _, t in objects if t is not None]
            entries.append(
                BackupEntry(
                    id=backup_id,
                    manifest=manifest,
                    objects=len(objects),
                    size=sum(size for _, size, _ in objects),
                    last_modified=max(times) if times else None,
                )
            )
        return entries

    async def delete(self, backup_id: str) -> None:
        """Remove a backup, its manifest first: a half-deleted backup is never taken for a whole one."""
        folder = self.folder(backup_id)
        await self.store.delete(folder.key(MANIFEST))
        for info in await self.store.list(folder.prefix):
            await self.store.delete(info.key)
