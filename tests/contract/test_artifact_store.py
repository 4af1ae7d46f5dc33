"""The ArtifactStore contract, run against every backend: a local folder and a real S3 (SeaweedFS)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from mlplatform.clock import utcnow
from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    InvalidKeyError,
    StorageUnavailableError,
    create_artifact_store,
)
from tests.services import S3_BUCKET, SeaweedFS, free_port

BAD_KEYS = [
    "../{m}",
    "a/../../{m}",
    "/tmp/{m}",
    "a//{m}",
    "%2e%2e/{m}",
    "a\\{m}",
    "..",
    ".",
    "é{m}",
    "{m}\x00",
]


@dataclass
class Backend:
    name: str
    store: ArtifactStore
    sibling: ArtifactStore  # same service, a root/prefix that shares a string prefix with `store`'s
    broken: ArtifactStore  # same kind, but its folder/endpoint cannot be used
    leaked: Callable[[str], Awaitable[list[str]]]  # anything named with the marker, anywhere it could land
    stored: Callable[[], Awaitable[list[str]]]  # every name physically under the store's root, temp files too


def _settings(url: str, credentials: dict[str, str] | None = None) -> StorageSettings:
    return StorageSettings.model_validate({"url": url, **(credentials or {})})


def _file_backend(tmp_path: Path, file_url: str) -> Backend:
    (tmp_path / "not-a-folder").write_bytes(b"")

    root = Path(file_url.removeprefix("file://"))

    async def leaked(marker: str) -> list[str]:
        return [str(p) for p in [*tmp_path.rglob(f"*{marker}*"), *tmp_path.parent.glob(f"*{marker}*")]]

    async def stored() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())

    return Backend(
        name="file",
        store=create_artifact_store(_settings(file_url)),
        sibling=create_artifact_store(_settings(f"{file_url}x")),
        broken=create_artifact_store(_settings(f"file://{tmp_path}/not-a-folder/artifacts")),
        leaked=leaked,
        stored=stored,
    )


def _raw_bucket(seaweedfs: SeaweedFS, credentials: dict[str, str]) -> S3Store:
    return S3Store(
        S3_BUCKET,
        endpoint=seaweedfs.endpoint,
        region="us-east-1",
        access_key_id=credentials["access-key-id"],
        secret_access_key=credentials["secret-access-key"],
        client_options={"allow_http": True},
    )


def _s3_backend(seaweedfs: SeaweedFS, s3_url: str, credentials: dict[str, str]) -> Backend:
    bucket = _raw_bucket(seaweedfs, credentials)
    base, _, query = s3_url.partition("?")
    prefix = base.removeprefix(f"s3://{S3_BUCKET}/")

    async def paths(within: str | None) -> list[str]:
        # The blocking API in a thread: obstore's async API can abort the process at exit.
        metas = await asyncio.to_thread(lambda: obstore.list(bucket, prefix=within).collect())
        return sorted(m["path"] for m in metas)

    async def leaked(marker: str) -> list[str]:
        return [path for path in await paths(None) if marker in path]

    async def stored() -> list[str]:
        return [path.removeprefix(f"{prefix}/") for path in await paths(prefix)]

    unreachable = f"s3://{S3_BUCKET}/x?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    return Backend(
        name="s3",
        store=create_artifact_store(_settings(s3_url, credentials)),
        sibling=create_artifact_store(_settings(f"{base}x?{query}", credentials)),
        broken=create_artifact_store(_settings(unreachable, credentials)),
        leaked=leaked,
        stored=stored,
    )


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return _file_backend(tmp_path, request.getfixturevalue("file_url"))
    return _s3_backend(
        request.getfixturevalue("seaweedfs"),
        request.getfixturevalue("s3_url"),
        request.getfixturevalue("s3_credentials"),
    )


async def _chunks(data: bytes, size: int, pause: float = 0.0) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        if pause:
            await asyncio.sleep(pause)
        yield data[start : start + size]


async def _collect(store: ArtifactStore, key: str) -> list[bytes]:
    return [chunk async for chunk in store.get(key)]


async def test_put_bytes_then_read_head_and_exists(backend: Backend) -> None:
    store = backend.store
    info = await store.put("models/iris/1/model.skops", b"weights")

    assert (info.key, info.size) == ("models/iris/1/model.skops", 7)
    assert await store.read_bytes("models/iris/1/model.skops") == b"weights"
    head = await store.head("models/iris/1/model.skops")
    assert (head.key, head.size) == ("models/iris/1/model.skops", 7)
    assert head.last_modified is not None
    assert await store.exists("models/iris/1/model.skops")
    assert not await store.exists("models/iris/1/other")
    assert not await store.exists("models/iris")


async def test_empty_object(backend: Backend) -> None:
    await backend.store.put("empty", b"")

    assert await backend.store.read_bytes("empty") == b""
    assert (await backend.store.head("empty")).size == 0


async def test_streamed_put_of_many_chunks_streams_back_identically(backend: Backend) -> None:
    data = os.urandom(12 * 1024 * 1024 + 123)

    info = await backend.store.put("datasets/big.bin", _chunks(data, 64 * 1024))

    assert info.size == len(data)
    assert (await backend.store.head("datasets/big.bin")).size == len(data)
    chunks = await _collect(backend.store, "datasets/big.bin")
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) < len(data)
    assert b"".join(chunks) == data


async def test_a_local_file_is_stored_and_unowned_objects_are_swept(backend: Backend, tmp_path: Path) -> None:
    local = tmp_path / "upload.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    await backend.store.put_file("datasets/a/1/data.csv", local)
    assert await backend.store.read_bytes("datasets/a/1/data.csv") == local.read_bytes()
    await backend.store.put("datasets/a/2/data.csv", b"orphan")
    await backend.store.put("models/m/1/model.onnx", b"elsewhere")
    owned = {"datasets/a/1/data.csv"}

    too_young = await backend.store.remove_unowned(
        "datasets/", owned, older_than=utcnow() - timedelta(hours=1)
    )
    assert too_young == [] and await backend.store.exists("datasets/a/2/data.csv")
    swept = await backend.store.remove_unowned("datasets/", owned, older_than=utcnow() + timedelta(minutes=1))
    assert swept == ["datasets/a/2/data.csv"]
    assert [info.key for info in await backend.store.list("")] == [
        "datasets/a/1/data.csv",
        "models/m/1/model.onnx",
    ]


async def test_list_by_prefix_is_sorted_and_limited_to_the_prefix(backend: Backend) -> None:
    keys = [
        "models/iris/2/model.skops",
        "models/iris/1/model.skops",
        "models/iris-v2/1/model.onnx",
        "models/irisx",
        "models.txt",
        "datasets/d1/data.csv",
    ]
    for key in keys:
        await backend.store.put(key, key.encode())

    async def listed(prefix: str) -> list[str]:
        return [info.key for info in await backend.store.list(prefix)]

    assert await listed("") == sorted(keys)
    assert await listed("models/") == sorted(k for k in keys if k.startswith("models/"))
    assert await listed("models/iris/") == ["models/iris/1/model.skops", "models/iris/2/model.skops"]
    assert await listed("models/iris") == [
        "models/iris-v2/1/model.onnx",
        "models/iris/1/model.skops",
        "models/iris/2/model.skops",
        "models/irisx",
    ]
    assert await listed("models/iris/1/model.skops") == ["models/iris/1/model.skops"]
    assert await listed("nothing/") == []
    sizes = {info.key: info.size for info in await backend.store.list()}
    assert sizes == {key: len(key) for key in keys}


async def test_stores_on_neighbouring_roots_do_not_see_each_other(backend: Backend) -> None:
    await backend.store.put("a/one", b"1")
    await backend.sibling.put("a/two", b"2")

    assert [info.key for info in await backend.store.list()] == ["a/one"]
    assert [info.key for info in await backend.sibling.list()] == ["a/two"]
    assert not await backend.store.exists("a/two")
    with pytest.raises(ArtifactNotFoundError):
        await backend.sibling.read_bytes("a/one")


async def test_overwrite_readers_see_the_old_or_the_new_object_whole(backend: Backend) -> None:
    old, new = b"o" * (3 * 1024 * 1024), b"n" * (3 * 1024 * 1024)
    await backend.store.put("models/m/1/model", old)
    writing = asyncio.ensure_future(backend.store.put("models/m/1/model", _chunks(new, 256 * 1024, 0.01)))
    seen: list[bytes] = []
    while not writing.done():
        seen.append(await backend.store.read_bytes("models/m/1/model"))
    await writing
    seen.append(await backend.store.read_bytes("models/m/1/model"))

    assert len(seen) > 1
    assert all(content in (old, new) for content in seen)
    assert seen[-1] == new
    assert await backend.stored() == ["models/m/1/model"]


async def test_a_failed_streamed_put_leaves_the_old_object(backend: Backend) -> None:
    await backend.store.put("k", b"old")

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * (9 * 1024 * 1024)  # past one multipart part on S3
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        await backend.store.put("k", failing())

    assert await backend.store.read_bytes("k") == b"old"
    assert await backend.stored() == ["k"]


async def test_delete_is_idempotent(backend: Backend) -> None:
    await backend.store.put("a/b", b"x")

    await backend.store.delete("a/b")
    await backend.store.delete("a/b")
    await backend.store.delete("never/there")

    assert not await backend.store.exists("a/b")
    assert await backend.store.list() == []
    assert await backend.stored() == []


async def test_missing_objects(backend: Backend) -> None:
    with pytest.raises(ArtifactNotFoundError):
        await _collect(backend.store, "no/such/key")
    with pytest.raises(ArtifactNotFoundError):
        await backend.store.head("no/such/key")
    assert await backend.store.list("no/") == []


@pytest.mark.parametrize("pattern", BAD_KEYS)
async def test_invalid_keys_are_refused_before_any_io(backend: Backend, pattern: str) -> None:
    marker = f"escape{uuid.uuid4().hex[:8]}"
    key = pattern.format(m=marker)
    for store in (backend.store, backend.broken):
        with pytest.raises(InvalidKeyError, match="artifact key"):
            await store.put(key, b"x")
        with pytest.raises(InvalidKeyError):
            await store.put(key, _chunks(b"x", 1))
        with pytest.raises(InvalidKeyError):
            store.get(key)
        with pytest.raises(InvalidKeyError):
            await store.head(key)
        with pytest.raises(InvalidKeyError):
            await store.exists(key)
        with pytest.raises(InvalidKeyError):
            await store.delete(key)
        with pytest.raises(InvalidKeyError):
            await store.list(f"{key}/")

    assert await backend.leaked(marker) == []
    assert await backend.stored() == []


async def test_an_unusable_backend_raises_storage_unavailable(backend: Backend) -> None:
    store = backend.broken
    with pytest.raises(StorageUnavailableError):
        await store.ping()
    with pytest.raises(StorageUnavailableError):
        await store.put("a/b", b"x")
    with pytest.raises(StorageUnavailableError):
        await store.put("a/b", _chunks(b"xy", 1))
    with pytest.raises(StorageUnavailableError):
        await store.read_bytes("a/b")
    with pytest.raises(StorageUnavailableError):
        await store.head("a/b")
    with pytest.raises(StorageUnavailableError):
        await store.list()
    await backend.store.ping()


# The local folder: symlinks planted below the root are never followed.


@pytest.fixture
def planted(tmp_path: Path, file_url: str) -> tuple[ArtifactStore, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "models").symlink_to(outside, target_is_directory=True)
    (root / "model.skops").symlink_to(outside / "secret.txt")
    return create_artifact_store(_settings(file_url)), outside


async def test_file_refuses_a_symlinked_folder_below_the_root(planted: tuple[ArtifactStore, Path]) -> None:
    store, outside = planted
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.read_bytes("models/secret.txt")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.put("models/new.txt", b"x")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.put("models/deeper/new.txt", _chunks(b"x", 1))
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.head("models/secret.txt")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.delete("models/secret.txt")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.list("models/")

    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert [info.key for info in await store.list()] == []


async def test_file_refuses_a_symlinked_file_below_the_root(planted: tuple[ArtifactStore, Path]) -> None:
    store, outside = planted
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.read_bytes("model.skops")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.put("model.skops", b"overwritten")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.delete("model.skops")
    with pytest.raises(InvalidKeyError, match="symlink"):
        await store.exists("model.skops")

    assert (outside / "secret.txt").read_bytes() == b"secret"


async def test_file_store_does_no_io_until_the_first_write(tmp_path: Path) -> None:
    store = create_artifact_store(_settings(f"file://{tmp_path}/lazy/artifacts"))
    await store.ping()
    assert await store.list() == []
    assert not (tmp_path / "lazy").exists()

    await store.put("a/b", b"x")

    assert (tmp_path / "lazy" / "artifacts" / "a" / "b").read_bytes() == b"x"
    assert sorted(p.name for p in (tmp_path / "lazy" / "artifacts" / "a").iterdir()) == ["b"]


async def test_file_url_may_be_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = create_artifact_store(StorageSettings())

    await store.put("models/m/1/model", b"x")

    assert (tmp_path / "data" / "artifacts" / "models" / "m" / "1" / "model").read_bytes() == b"x"


# S3: credentials, URL options and error messages.


async def test_s3_wrong_credentials_raise_storage_unavailable_without_the_secret(
    s3_url: str, s3_credentials: dict[str, str]
) -> None:
    wrong = {"access-key-id": s3_credentials["access-key-id"], "secret-access-key": "not-the-secret-1234"}
    store = create_artifact_store(_settings(s3_url, wrong))

    attempts: list[Callable[[], Awaitable[object]]] = [
        store.ping,
        lambda: store.put("a", b"x"),
        lambda: store.read_bytes("a"),
        lambda: store.head("a"),
        store.list,
    ]
    for attempt in attempts:
        with pytest.raises(StorageUnavailableError) as caught:
            await attempt()
        assert "not-the-secret-1234" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_s3_url_options_are_checked(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        create_artifact_store(_settings(f"{seaweedfs.url()}&endpont=x"))
    with pytest.raises(ValueError, match="timeout"):
        create_artifact_store(_settings(f"{seaweedfs.url()}&timeout=soon"))
    with pytest.raises(ValueError, match="prefix"):
        create_artifact_store(_settings(f"s3://{S3_BUCKET}/a/../b"))
    with pytest.raises(ValueError, match="both"):
        create_artifact_store(_settings(seaweedfs.url(), {"access-key-id": "only-the-id"}))


def test_unknown_scheme_names_the_url() -> None:
    with pytest.raises(ValueError, match="ftp://host/path"):
        create_artifact_store(StorageSettings.model_construct(url="ftp://host/path"))


def test_obstore_is_imported_only_for_s3() -> None:
    code = (
        "import sys\n"
        "from mlplatform.settings import StorageSettings\n"
        "from mlplatform.stores.artifacts import create_artifact_store\n"
        "create_artifact_store(StorageSettings(url='file:///tmp/x'))\n"
        "assert 'obstore' not in sys.modules\n"
        "create_artifact_store(StorageSettings(url='s3://b?endpoint=http://127.0.0.1:1'))\n"
        "assert 'obstore' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
