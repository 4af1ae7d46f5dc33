"""Shared fixtures: real PostgreSQL, Redis and SeaweedFS; fresh schemas, prefixes and folders per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.services import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisServer,
    SeaweedFS,
    ServiceMissingError,
    check_postgres,
    check_redis,
)


def _need(check: object) -> str:
    try:
        return check()  # type: ignore[operator, no-any-return]
    except ServiceMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return _need(check_postgres)


# Sessions holding a lock on something in one schema.
_LOCK_HOLDERS = """
SELECT DISTINCT l.pid FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND l.pid <> pg_backend_pid()
"""


@pytest.fixture
def postgres_url(postgres_dsn: str) -> Iterator[str]:
    """A SQLAlchemy URL whose connections see only a fresh, empty schema."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    base = postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}?options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        # An app of the test may still run on the event loop this teardown blocks (its fixture ends later
        # when it was set up first): a background task of it in a transaction could never end it, and the
        # DROP would wait forever. Those sessions are ended first.
        for (pid,) in conn.execute(_LOCK_HOLDERS, (schema,)).fetchall():
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/mlplatform.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every database backend in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    return _need(check_redis)


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    """The shared Redis, with a key prefix of this test's own."""
    return f"{redis_base_url}?prefix=t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, started, that the test may stop, pause or restart."""
    try:
        server = RedisServer.create()
        server.start()
    except ServiceMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    try:
        server = SeaweedFS.start()
    except ServiceMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def s3_url(seaweedfs: SeaweedFS) -> str:
    """The SeaweedFS bucket, under a prefix of this test's own."""
    return seaweedfs.url(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def s3_credentials() -> dict[str, str]:
    return {"access-key-id": S3_ACCESS_KEY, "secret-access-key": S3_SECRET_KEY}


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"file://{tmp_path}/artifacts"
