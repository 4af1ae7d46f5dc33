"""Alembic environment: synchronous driver, URL handed over by `mlplatform.db.alembic_config`.

A caller may hand over an open connection instead (`config.attributes["connection"]`): the migrations then
run in its transaction, which the caller commits or rolls back (a restore migrates and loads in one).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from mlplatform.tables import metadata

config = context.config


def migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    shared: Connection | None = config.attributes.get("connection")
    if shared is not None:
        migrate(shared)
        return
    engine = create_engine(config.attributes["url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        migrate(connection)
    engine.dispose()


run()
