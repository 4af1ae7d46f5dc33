"""Artifacts in an S3-compatible bucket via obstore: short timeouts, errors that name no secret."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlsplit

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.exceptions import PreconditionError
from obstore.store import S3Store

from mlplatform.stores.artifacts.base import (
    ArtifactNotFoundError,
    ArtifactStore,
    ObjectInfo,
    StorageUnavailableError,
)
from mlplatform.stores.artifacts.keys import InvalidKeyError, check_key

if TYPE_CHECKING:
    from obstore import BytesStream, GetOptions, ObjectMeta, WritableFile
    from obstore.store import S3Config

CHUNK_SIZE = 1024 * 1024
# Multipart part size and ranged-GET size: each request stays well inside the request timeout.
PART_SIZE = 8 * 1024 * 1024
MAX_CONCURRENCY = 2
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = timedelta(seconds=2)
_PING_KEY = ".mlplatform-ping"
_URL_OPTIONS = frozenset({"endpoint", "region", "timeout"})

P = ParamSpec("P")
T = TypeVar("T")


class _ObjectChangedError(StorageUnavailableError):
    """The object was replaced between two ranged reads of one `get`."""


class S3ArtifactStore(ArtifactStore):
    """Objects under `s3://bucket/prefix/`; keys are given and returned without the prefix.

    obstore is only ever called through its blocking API in worker threads: its `*_async` futures complete by
    calling into Python from a tokio thread, which aborts the process (SIGABRT) when that happens while the
    interpreter is exiting. Reads are ranged GETs pinned to one ETag, so a reader never mixes two versions.
    """

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not bucket:
            raise ValueError("S3 artifact store: the bucket name is empty")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("S3 artifact store: give both access-key-id and secret-access-key, or neither")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        config: S3Config = {}
        if endpoint:
            config["endpoint"] = endpoint
        if region:
            config["region"] = region
        if access_key_id is not None and secret_access_key is not None:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        request_timeout = timedelta(seconds=timeout)
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": request_timeout,
            },
            retry_config={
                "max_retries": 2,
                "retry_timeout": request_timeout,
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1)},
            },
        )
        # Without explicit keys obstore reads the standard AWS variables; keep them out of messages too.
        env_secrets = (os.environ.get(name) for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
        self._secrets = [s for s in (access_key_id, secret_access_key, *env_secrets) if s]

    @classmethod
    def from_url(
        cls, url: str, *, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> S3ArtifactStore:
        """`s3://BUCKET[/PREFIX]?endpoint=http://host:port&region=us-east-1&timeout=30`; options optional."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"storage url {url!r}: expected s3://BUCKET[/PREFIX][?endpoint=...&region=...]")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - _URL_OPTIONS)
        if unknown:
            raise ValueError(
                f"storage url {url!r}: unknown option(s) {unknown}, expected {sorted(_URL_OPTIONS)}"
            )
        try:
            timeout = float(options.get("timeout") or DEFAULT_TIMEOUT)
        except ValueError:
            raise ValueError(f"storage url {url!r}: timeout must be a number of seconds") from None
        if not 0 < timeout <= 3600:
            raise ValueError(f"storage url {url!r}: timeout must be between 0 and 3600 seconds")
        prefix = parts.path.strip("/")
        try:
            return cls(
                parts.netloc,
                prefix=prefix,
                endpoint=options.get("endpoint") or None,
                region=options.get("region") or None,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                timeout=timeout,
            )
        except InvalidKeyError as exc:
            raise ValueError(f"storage url {url!r}: bad prefix: {exc}") from None

    def __repr__(self) -> str:
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"

    async def put(self, key: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        check_key(key)
        if isinstance(data, bytes | bytearray | memoryview):
            result = await self._call(
                key,
                obstore.put,
                self._store,
                key,
                data,
                chunk_size=PART_SIZE,
                max_concurrency=MAX_CONCURRENCY,
            )
            return ObjectInfo(key=key, size=len(data), etag=result["e_tag"])
        writer = await self._call(
            key,
            obstore.open_writer,
            self._store,
            key,
            buffer_size=PART_SIZE,
            max_concurrency=MAX_CONCURRENCY,
        )
        size = 0
        try:
            async for chunk in data:
                await self._call(key, writer.write, chunk)
                size += len(chunk)
            # Nothing is visible until close completes the (multipart) upload.
            await self._call(key, writer.close)
        except BaseException as exc:
            _abort_in_background(writer, exc)
            raise
        return ObjectInfo(key=key, size=size)

    def get(self, key: str) -> AsyncIterator[bytes]:
        check_key(key)
        return self._read(key)

    async def _read(self, key: str) -> AsyncIterator[bytes]:
        meta = await self._call(key, obstore.head, self._store, key)
        start, retries = 0, 2
        while start < meta["size"]:
            options: GetOptions = {"range": (start, min(start + PART_SIZE, meta["size"]))}
            if meta["e_tag"]:
                options["if_match"] = meta["e_tag"]
            try:
                result = await self._call(key, obstore.get, self._store, key, options=options)
            except _ObjectChangedError:
                if start or not retries:
                    raise
                # Replaced between HEAD and the first GET: nothing was yielded yet, so read the new version.
                retries -= 1
                meta = await self._call(key, obstore.head, self._store, key)
                continue
            stream = result.stream(min_chunk_size=CHUNK_SIZE)
            while (chunk := await self._call(key, _next_chunk, stream)) is not None:
                yield chunk
            start += PART_SIZE

    async def head(self, key: str) -> ObjectInfo:
        check_key(key)
        return _object_info(key, await self._call(key, obstore.head, self._store, key))

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ArtifactNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        check_key(prefix, allow_prefix=True)
        # S3 prefixes here are whole path segments, so list the folder and filter by the string prefix.
        folder = prefix.rpartition("/")[0] or None
        metas = await self._call(prefix, _list_all, self._store, folder)
        found = [
            _object_info(m["path"], m) for m in metas if m["path"].startswith(prefix) and _valid(m["path"])
        ]
        return sorted(found, key=lambda info: info.key)

    async def delete(self, key: str) -> None:
        check_key(key)
        with contextlib.suppress(ArtifactNotFoundError):
            await self._call(key, obstore.delete, self._store, key)

    async def ping(self) -> None:
        with contextlib.suppress(ArtifactNotFoundError):
            await self._call(_PING_KEY, obstore.head, self._store, _PING_KEY)

    async def _call(self, key: str, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {key!r}") from None
        except PreconditionError:
            raise _ObjectChangedError(f"artifact {key!r} was replaced while being read") from None
        except (ObstoreError, OSError) as exc:
            raise StorageUnavailableError(self._describe(key, exc)) from None

    def _describe(self, key: str, exc: BaseException) -> str:
        # obstore's text ends with a multi-line debug dump; its first line has the status and S3 error code.
        detail = str(exc).split("\n", 1)[0][:400]
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return f"S3 bucket {self.bucket!r} ({key!r}): {type(exc).__name__}: {detail}"


def _list_all(store: S3Store, folder: str | None) -> builtins.list[ObjectMeta]:
    return builtins.list(obstore.list(store, prefix=folder).collect())


def _next_chunk(stream: BytesStream) -> bytes | None:
    return next(stream, None)


def _abort_in_background(writer: WritableFile, exc: BaseException) -> None:
    """Abort the multipart upload without awaiting (the task may be cancelled); it was never visible."""

    def abort() -> None:
        with contextlib.suppress(Exception):
            writer.__exit__(type(exc), exc, exc.__traceback__)

    asyncio.get_running_loop().run_in_executor(None, abort)


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKeyError:
        return False
    return True


def _object_info(key: str, meta: ObjectMeta) -> ObjectInfo:
    return ObjectInfo(key=key, size=meta["size"], last_modified=meta["last_modified"], etag=meta["e_tag"])
