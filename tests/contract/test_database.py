"""The database layer on every backend: migrations match the models, sessions, ping, pool settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import Connection, create_engine, inspect, select, text

from mlplatform import db
from mlplatform.auth.tables import UserRow
from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.settings import DatabaseSettings, PoolSettings
from mlplatform.tables import metadata
from tests.services import free_port


@contextlib.contextmanager
def migrated(url: str) -> Iterator[Connection]:
    """A connection to the database at `url`, upgraded to the head revision."""
    settings = DatabaseSettings(url=url)
    db.upgrade(settings)
    engine = create_engine(db.sync_url(settings))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def table_names(settings: DatabaseSettings) -> set[str]:
    engine = create_engine(db.sync_url(settings))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


async def test_migrations_go_up_and_down(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    assert await asyncio.to_thread(db.current_revision, settings) == db.head_revision()
    assert {"users", "api_keys", "alembic_version"} <= await asyncio.to_thread(table_names, settings)
    await asyncio.to_thread(db.upgrade, settings)  # idempotent
    await asyncio.to_thread(db.downgrade, settings, "base")
    assert await asyncio.to_thread(table_names, settings) <= {"alembic_version"}
    assert await asyncio.to_thread(db.current_revision, settings) is None


def test_migrations_match_the_models(database_url: str) -> None:
    with migrated(database_url) as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


async def test_sessions_write_and_read(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    try:
        user_id = new_id()
        async with database.session() as session, session.begin():
            session.add(UserRow(id=user_id, name="ada", email=None, created_at=utcnow(), disabled_at=None))
        async with database.session() as session:
            row = (await session.execute(select(UserRow).where(UserRow.id == user_id))).scalar_one()
        assert row.name == "ada"
        assert row.created_at.tzinfo is not None or database.backend == "sqlite"
        await database.ping()
    finally:
        await database.dispose()


async def test_ping_fails_clearly_when_the_database_is_unreachable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    database = db.Database(DatabaseSettings(url=url, pool=PoolSettings(connection_timeout=1000)))
    try:
        with pytest.raises(db.DatabaseUnavailableError, match="OperationalError"):
            await database.ping()
    finally:
        await database.dispose()


def test_pool_settings_reach_the_engine(postgres_url: str) -> None:
    settings = DatabaseSettings(
        url=postgres_url,
        pool=PoolSettings(maximum_pool_size=12, minimum_idle=3, connection_timeout=4000, max_lifetime=60000),
    )
    database = db.Database(settings)
    pool = database.engine.pool
    assert pool.size() == 3  # type: ignore[attr-defined]
    assert pool._max_overflow == 9  # type: ignore[attr-defined]
    assert pool._timeout == 4.0  # type: ignore[attr-defined]
    assert pool._recycle == 60.0
    asyncio.run(database.dispose())


def test_credentials_are_applied_and_escaped() -> None:
    settings = DatabaseSettings(
        url="postgresql+psycopg://db.internal:5432/ml", username="ml user", password=SecretStr("p@ss:w/rd")
    )
    url = db.database_url(settings)
    assert url.username == "ml user"
    assert url.password == "p@ss:w/rd"
    assert "p%40ss%3Aw%2Frd" in url.render_as_string(hide_password=False)


def test_prediction_blocks_are_stored_uncompressed_on_postgresql(postgres_url: str) -> None:
    with migrated(postgres_url) as conn:
        storage = dict(
            conn.execute(
                text(
                    "SELECT attname, attstorage FROM pg_attribute "
                    "WHERE attrelid = 'prediction_batches'::regclass AND attnum > 0"
                )
            ).all()
        )
    columns = ("inputs", "inputs_f64", "predictions", "probabilities", "probabilities_f64")
    assert {column: storage[column] for column in columns} == dict.fromkeys(columns, "e")


def test_request_id_lookups_use_an_index_that_skips_predictions_without_one(database_url: str) -> None:
    with migrated(database_url) as conn:
        for table in ("prediction_logs", "prediction_batches"):
            name = f"ix_{table}_request_id"
            if conn.dialect.name == "postgresql":
                # this test's schema only: other tests' schemas may hold the same index at the same moment
                query = (
                    "SELECT indexdef FROM pg_indexes WHERE indexname = :n AND schemaname = current_schema()"
                )
                definition = conn.execute(text(query), {"n": name}).scalar_one()
                conn.execute(text("SET enable_seqscan = off"))
                explain = f"EXPLAIN SELECT id FROM {table} WHERE request_id = :r"
            else:
                definition = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name}
                ).scalar_one()
                explain = f"EXPLAIN QUERY PLAN SELECT id FROM {table} WHERE request_id = :r"
            plan = " ".join(str(row[-1]) for row in conn.execute(text(explain), {"r": "x"}))
            assert "request_id IS NOT NULL" in definition, definition
            assert name in plan, plan
