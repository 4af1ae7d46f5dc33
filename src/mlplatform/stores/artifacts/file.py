"""Artifacts in a local folder: atomic renames, streamed in threads, no symlinks followed below the root."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import stat
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from mlplatform.stores.artifacts.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    ObjectInfo,
    StorageUnavailableError,
)
from mlplatform.stores.artifacts.keys import InvalidKeyError, check_key, is_valid_segment

CHUNK_SIZE = 1024 * 1024
# No valid key segment starts with ".", so temp files never collide with keys and list skips them.
_TEMP_PREFIX = ".tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

P = ParamSpec("P")
T = TypeVar("T")


class FileArtifactStore(ArtifactStore):
    """Objects are files under `root`; `a/b/c` is `root/a/b/c`. The root is created on the first write."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def __repr__(self) -> str:
        return f"FileArtifactStore({str(self.root)!r})"

    async def put(self, key: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        check_key(key)
        upload = await _io(self._begin_upload, key)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                await _io(upload.write, data)
            else:
                async for chunk in data:
                    await _io(upload.write, chunk)
            return await _io(upload.commit)
        except BaseException:
            # Synchronous on purpose: it must also run while the task is being cancelled.
            upload.discard()
            raise

    def get(self, key: str) -> AsyncIterator[bytes]:
        check_key(key)
        return self._read(key)

    async def _read(self, key: str) -> AsyncIterator[bytes]:
        file = await _io(self._open_for_read, key)
        try:
            while chunk := await _io(file.read, CHUNK_SIZE):
                yield chunk
        finally:
            file.close()

    def open_local(self, key: str) -> BinaryIO:
        check_key(key)
        return self._open_for_read(key)

    async def head(self, key: str) -> ObjectInfo:
        check_key(key)
        return await _io(self._head, key)

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ArtifactNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_key(prefix, allow_prefix=True)
        return await _io(self._list, prefix)

    async def delete(self, key: str) -> None:
        check_key(key)
        await _io(self._delete, key)

    async def ping(self) -> None:
        await _io(self._ping)

    # The methods below are blocking; they run in a worker thread.

    def _open_parent(self, key: str, *, create: bool = False) -> tuple[int, str]:
        """Open the folder holding `key` (never through a symlink) and return (folder fd, file name)."""
        *folders, name = key.split("/")
        return self._open_folder(key, folders, create=create), name

    def _open_folder(self, key: str, folders: Sequence[str], *, create: bool) -> int:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except NotADirectoryError:
            raise StorageUnavailableError(f"artifact folder {str(self.root)!r} is not a folder") from None
        try:
            for folder in folders:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(folder, dir_fd=fd)
                child = _open_no_symlink(key, folder, _DIR_FLAGS, fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _begin_upload(self, key: str) -> _Upload:
        os.makedirs(self.root, exist_ok=True)
        try:
            folder, name = self._open_parent(key, create=True)
        except NotADirectoryError:
            raise InvalidKeyError(
                f"artifact key {key!r}: a parent of this key is an existing artifact"
            ) from None
        try:
            _check_replaceable(key, name, folder)
            temp = f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            file = os.fdopen(os.open(temp, flags, 0o666, dir_fd=folder), "wb")
        except BaseException:
            os.close(folder)
            raise
        return _Upload(key=key, name=name, temp=temp, folder=folder, file=file)

    def _open_for_read(self, key: str) -> BinaryIO:
        with _not_found_as(key):
            folder, name = self._open_parent(key)
            try:
                fd = _open_no_symlink(key, name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, folder)
            finally:
                os.close(folder)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArtifactNotFoundError(f"no artifact {key!r}")
        return os.fdopen(fd, "rb", buffering=0)

    def _head(self, key: str) -> ObjectInfo:
        with _not_found_as(key):
            folder, name = self._open_parent(key)
            try:
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            finally:
                os.close(folder)
        if stat.S_ISLNK(info.st_mode):
            raise _symlink_error(key, name)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactNotFoundError(f"no artifact {key!r}")
        return _object_info(key, info)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        *folders, start = prefix.split("/")
        base = "".join(f"{folder}/" for folder in folders)
        try:
            fd = self._open_folder(prefix, folders, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            found = _walk(fd, base, start)
        finally:
            os.close(fd)
        return sorted(found, key=lambda info: info.key)

    def _delete(self, key: str) -> None:
        try:
            folder, name = self._open_parent(key)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                raise _symlink_error(key, name)
            if stat.S_ISREG(info.st_mode):
                os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            return
        finally:
            os.close(folder)

    def _ping(self) -> None:
        existing = self.root
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise StorageUnavailableError(f"artifact folder {str(self.root)!r} is not a writable folder")


@dataclass
class _Upload:
    """A temp file next to the final name; `commit` renames it into place atomically."""

    key: str
    name: str
    temp: str
    folder: int
    file: BinaryIO
    size: int = 0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.file.write(chunk)
        self.size += len(chunk)

    def commit(self) -> ObjectInfo:
        self.file.flush()
        os.fsync(self.file.fileno())
        info = os.fstat(self.file.fileno())
        self.file.close()
        _check_replaceable(self.key, self.name, self.folder)
        os.replace(self.temp, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)
        # The rename is only durable once the folder itself is flushed.
        os.fsync(self.folder)
        os.close(self.folder)
        self.folder = -1
        return _object_info(self.key, info)

    def discard(self) -> None:
        if self.folder < 0:
            return
        with contextlib.suppress(OSError, ValueError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp, dir_fd=self.folder)
        os.close(self.folder)
        self.folder = -1


async def _io(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking filesystem work in a thread; OS failures become `StorageUnavailableError`."""
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except OSError as exc:
        where = f" ({exc.filename})" if isinstance(exc.filename, str) else ""
        raise StorageUnavailableError(f"artifact folder: {exc.strerror or exc}{where}") from exc


@contextlib.contextmanager
def _not_found_as(key: str) -> Iterator[None]:
    try:
        yield
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactNotFoundError(f"no artifact {key!r}") from None


def _open_no_symlink(key: str, name: str, flags: int, folder: int) -> int:
    try:
        return os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        # O_NOFOLLOW reports a symlink as ELOOP, or ENOTDIR together with O_DIRECTORY.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(name, folder):
            raise _symlink_error(key, name) from None
        raise


def _is_symlink(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_replaceable(key: str, name: str, folder: int) -> None:
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise _symlink_error(key, name)
    if not stat.S_ISREG(mode):
        raise InvalidKeyError(f"artifact key {key!r}: a folder of other artifacts already has this name")


def _symlink_error(key: str, name: str) -> InvalidKeyError:
    return InvalidKeyError(f"artifact key {key!r}: {name!r} is a symlink under the artifact root (refused)")


def _walk(folder: int, base: str, start: str) -> list[ObjectInfo]:
    """Every regular file below `folder` whose first name component starts with `start`."""
    found: list[ObjectInfo] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(start) or not is_valid_segment(entry.name):
                continue
            if entry.is_file(follow_symlinks=False):
                found.append(_object_info(base + entry.name, entry.stat(follow_symlinks=False)))
            elif entry.is_dir(follow_symlinks=False):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=folder)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                try:
                    found.extend(_walk(child, f"{base}{entry.name}/", ""))
                finally:
                    os.close(child)
    return found


def _object_info(key: str, info: os.stat_result) -> ObjectInfo:
    modified = datetime.fromtimestamp(info.st_mtime, tz=UTC)
    return ObjectInfo(key=key, size=info.st_size, last_modified=modified)
