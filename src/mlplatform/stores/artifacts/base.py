"""The artifact store interface: immutable blobs under server-generated keys."""

from __future__ import annotations

import asyncio
import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO


class ArtifactNotFoundError(Exception):
    """No object under that key."""


class StorageUnavailableError(Exception):
    """The storage backend failed or did not answer."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None
    etag: str | None = None


class ArtifactStore(ABC):
    """Blob storage for model artifacts, datasets, checkpoints and backups.

    Contract, for every backend:
    - Every key is checked by `mlplatform.stores.artifacts.keys.check_key` before any I/O:
      `InvalidKeyError` (a ValueError) for anything outside the allow-list pattern, `..`, absolute paths,
      empty segments or over-long keys. Nothing under the store's root/prefix can be escaped.
    - `put` streams: it accepts bytes or an async iterable of bytes chunks and never holds more than a
      few chunks in memory. A put is atomic: readers see the old object or the whole new one, never a part.
    - `get` streams the object's bytes in chunks; `ArtifactNotFoundError` when absent.
    - `list(prefix)` returns every object whose key starts with `prefix`, sorted by key.
    - `delete` is idempotent (no error for a missing key).
    - Backend failures raise `StorageUnavailableError`.
    """

    scheme: str = ""

    @abstractmethod
    async def put(self, key: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo: ...

    @abstractmethod
    def get(self, key: str) -> AsyncIterator[bytes]:
        """Stream the object's bytes (an async generator)."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise `StorageUnavailableError` unless the backend answers now."""

    async def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Store a local file, read in 1 MiB chunks off the event loop."""
        return await self.put(key, _file_chunks(path))

    async def remove_unowned(
        self, prefix: str, owned: set[str], *, older_than: datetime
    ) -> builtins.list[str]:  # `list` is a method here
        """Delete the objects under `prefix` that are not in `owned` and were last modified before
        `older_than` (younger ones may belong to an upload still in flight on another instance)."""
        orphans = [
            info.key
            for info in await self.list(prefix)
            if info.key not in owned and (info.last_modified is None or info.last_modified < older_than)
        ]
        for key in orphans:
            await self.delete(key)
        return orphans

    def open_local(self, key: str) -> BinaryIO | None:
        """The object opened for reading when it is a file on this machine (None elsewhere): readers such
        as pyarrow then read it in place instead of through a copy of its bytes."""
        return None

    async def read_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.get(key)])

    async def close(self) -> None:
        return None


async def _file_chunks(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, size):
            yield chunk
    finally:
        handle.close()
