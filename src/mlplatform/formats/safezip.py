"""Open uploaded zip archives only after checking them for bombs, unsafe paths, links and encryption."""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path

from mlplatform.formats.base import InvalidArtifactError
from mlplatform.formats.describe import reason

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_RATIO = 200  # uncompressed / compressed, for entries above RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1024**2
_DRIVE = re.compile(r"^[A-Za-z]:")


def open_checked_zip(path: Path) -> zipfile.ZipFile:
    """The archive, opened, once every entry has passed the checks; raises InvalidArtifactError otherwise."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArtifactError(
            f"The file starts like a zip archive but cannot be read as one ({reason(exc)}); upload a "
            "complete archive."
        ) from exc
    try:
        check_zip(archive)
    except BaseException:
        archive.close()
        raise
    return archive


def check_zip(archive: zipfile.ZipFile) -> None:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise InvalidArtifactError(
            f"The zip archive has {len(infos)} entries, more than the {MAX_ENTRIES} allowed; upload only "
            "the model's own files."
        )
    total = 0
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        _check_name(name)
        if name in seen:
            raise InvalidArtifactError(
                f"The zip archive holds the entry {name!r} twice; rebuild it with each file once."
            )
        seen.add(name)
        if info.flag_bits & 0x1:
            raise InvalidArtifactError(f"The zip entry {name!r} is encrypted; upload an unencrypted archive.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidArtifactError(
                f"The zip entry {name!r} is a symbolic link; rebuild the archive with regular files only."
            )
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise InvalidArtifactError(
                f"The zip archive expands to more than {MAX_TOTAL_BYTES // 1024**3} GiB; upload a smaller "
                "model."
            )
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InvalidArtifactError(
                f"The zip entry {name!r} is compressed more than {MAX_RATIO}:1, which looks like a zip "
                "bomb; upload the archive without such an entry."
            )


def _check_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or _DRIVE.match(name)
        or any(part == ".." for part in parts)
    ):
        raise InvalidArtifactError(
            f"The zip archive has an entry with an unsafe path ({name!r}); rebuild it with relative paths "
            "only."
        )


def read_member(archive: zipfile.ZipFile, name: str, *, limit: int) -> bytes:
    """One entry's bytes, refusing entries larger than `limit`."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise InvalidArtifactError(
            f"The zip entry {name!r} is {info.file_size} bytes, more than the {limit} allowed for it."
        )
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InvalidArtifactError(
            f"The zip entry {name!r} is damaged ({reason(exc)}); upload a complete archive."
        ) from exc


def extract_member(archive: zipfile.ZipFile, name: str, destination: Path) -> Path:
    """Copy one entry to `destination` (a path the caller chose, never one taken from the archive)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with archive.open(name) as source, destination.open("wb") as target:
            shutil.copyfileobj(source, target, length=1024**2)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        destination.unlink(missing_ok=True)
        raise InvalidArtifactError(
            f"The zip entry {name!r} is damaged ({reason(exc)}); upload a complete archive."
        ) from exc
    return destination
