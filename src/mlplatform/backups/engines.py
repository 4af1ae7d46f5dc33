"""Synchronous connections for backups and restores (run in a thread), with real transactions on SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, pool

from mlplatform import db
from mlplatform.settings import DatabaseSettings


def sync_engine(settings: DatabaseSettings, *, write: bool = False) -> Engine:
    """An engine for one backup or restore. On SQLite, Python's driver begins no transaction for a SELECT;
    here every transaction is an explicit BEGIN (a read snapshot), or BEGIN IMMEDIATE (the write lock at
    once) when `write`."""
    url = db.sync_url(settings)
    engine = create_engine(url, poolclass=pool.NullPool)
    if url.get_backend_name() == "sqlite":
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        if write and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # a restore may create the file

        def connected(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we say when transactions begin
            dbapi_connection.execute("PRAGMA busy_timeout=10000")

        def began(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

        event.listen(engine, "connect", connected)
        event.listen(engine, "begin", began)
    return engine


def migrate_in(connection: Connection, settings: DatabaseSettings, revision: str) -> None:
    """Apply migrations up to `revision` inside `connection`'s open transaction (the caller commits)."""
    from alembic import command

    config = db.alembic_config(settings)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
