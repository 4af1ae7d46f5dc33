"""Artifact stores chosen by URL scheme: `file://PATH` (a local folder) or `s3://BUCKET[/PREFIX]?...`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    ObjectInfo,
    StorageUnavailableError,
)
from mlplatform.stores.artifacts.file import FileArtifactStore
from mlplatform.stores.artifacts.keys import InvalidKeyError, check_key

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactStore",
    "InvalidKeyError",
    "ObjectInfo",
    "StorageUnavailableError",
    "check_key",
    "create_artifact_store",
]


def _file_store(settings: StorageSettings) -> ArtifactStore:
    path = settings.url.removeprefix("file://")
    if not path:
        raise ValueError(f"storage url {settings.url!r}: expected file://PATH")
    return FileArtifactStore(Path(path))


def _s3_store(settings: StorageSettings) -> ArtifactStore:
    # obstore is heavy and optional at run time: import it only when an s3:// URL is used.
    from mlplatform.stores.artifacts.s3 import S3ArtifactStore

    key_id, secret = settings.access_key_id, settings.secret_access_key
    return S3ArtifactStore.from_url(
        settings.url,
        access_key_id=key_id.get_secret_value() if key_id else None,
        secret_access_key=secret.get_secret_value() if secret else None,
    )


STORES: dict[str, Callable[[StorageSettings], ArtifactStore]] = {"file": _file_store, "s3": _s3_store}


def create_artifact_store(settings: StorageSettings) -> ArtifactStore:
    """Build the store for `settings.url` (no I/O: the first request connects or creates the folder)."""
    scheme, separator, _ = settings.url.partition("://")
    loader = STORES.get(scheme) if separator else None
    if loader is None:
        raise ValueError(f"storage url {settings.url!r}: unknown scheme, expected one of {sorted(STORES)}")
    return loader(settings)
