"""The relational database: engine and sessions from `database.*`, health ping, Alembic migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from mlplatform.settings import DatabaseSettings

MIGRATIONS = Path(__file__).parent / "migrations"

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every domain's tables (`*/tables.py`)."""

    metadata = MetaData(naming_convention=NAMING)


class DatabaseUnavailableError(Exception):
    """The database did not answer."""


def database_url(settings: DatabaseSettings) -> URL:
    """The configured URL with `database.username`/`password` applied (escaped by SQLAlchemy)."""
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        return url  # a file has no credentials
    if settings.username:
        url = url.set(username=settings.username)
    if settings.password is not None:
        url = url.set(password=settings.password.get_secret_value())
    return url


def sync_url(settings: DatabaseSettings) -> URL:
    """The same database through a synchronous driver (Alembic runs synchronously)."""
    url = database_url(settings)
    if url.drivername == "sqlite+aiosqlite":
        return url.set(drivername="sqlite")
    return url


def _engine_options(url: URL, settings: DatabaseSettings) -> dict[str, Any]:
    pool = settings.pool
    if url.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": pool.connection_timeout / 1000}}
    minimum = max(1, min(pool.minimum_idle, pool.maximum_pool_size))
    return {
        "pool_size": minimum,
        "max_overflow": pool.maximum_pool_size - minimum,
        "pool_timeout": pool.connection_timeout / 1000,
        "pool_recycle": pool.max_lifetime / 1000 if pool.max_lifetime else -1,
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": max(1, pool.connection_timeout // 1000)},
    }


def _prepare_sqlite(url: URL) -> None:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    """One async engine and session factory for the process; nothing connects until first use."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.url = database_url(settings)
        self.backend = self.url.get_backend_name()
        self.engine: AsyncEngine = create_async_engine(self.url, **_engine_options(self.url, settings))
        if self.backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise `DatabaseUnavailableError` unless `SELECT 1` answers within `timeout` seconds."""
        if self.backend == "sqlite":
            _prepare_sqlite(self.url)
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (TimeoutError, OSError, Exception) as exc:
            raise DatabaseUnavailableError(f"{type(exc).__name__}: {_first_line(exc)}") from exc

    async def dispose(self) -> None:
        await self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def alembic_config(settings: DatabaseSettings) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sync_url(settings)
    return config


def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Apply migrations up to `revision` (synchronous; call it before the event loop or in a thread)."""
    from alembic import command

    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite(url)
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: DatabaseSettings, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(settings), revision)


def current_revision(settings: DatabaseSettings) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(sync_url(settings))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
