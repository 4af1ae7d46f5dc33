"""Load a verified backup into an empty database, in one transaction: all of it, or nothing.

The target is either new (no tables: it is migrated to the backup's revision inside the same transaction) or
at exactly the backup's revision with every table empty; anything else is refused before a row is written.
On PostgreSQL the tables are locked against writers meanwhile, and every sequence is moved past the highest
restored id so new rows never collide.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Float,
    Insert,
    LargeBinary,
    String,
    Text,
    bindparam,
    cast,
    column,
    insert,
    inspect,
    table,
    text,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from mlplatform import db
from mlplatform.backups.codec import row_decoder
from mlplatform.backups.engines import migrate_in, sync_engine
from mlplatform.backups.manifest import BackupError, Manifest, TableEntry
from mlplatform.backups.progress import Reporter
from mlplatform.settings import DatabaseSettings

BATCH_ROWS = 1000
LOCK_TIMEOUT = "10s"
_BIND_TYPES: dict[str, TypeEngine[Any]] = {
    "string": String(),
    "integer": BigInteger(),
    "float": Float(),
    "boolean": Boolean(),
    "datetime": DateTime(timezone=True),
    "naive-datetime": DateTime(),
    "json": Text(),  # the document's text, bound as is
    "binary": LargeBinary(),
}


def load_database(settings: DatabaseSettings, folder: Path, manifest: Manifest, reporter: Reporter) -> bool:
    """Load the files in `folder` (checked against `manifest` already). True when the schema was created."""
    engine = sync_engine(settings, write=True)
    try:
        with engine.connect() as conn, conn.begin():
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            created = _prepare_schema(conn, settings, manifest)
            _check_columns(conn, manifest)
            if postgres:
                names = ", ".join(_quote(conn, t.name) for t in manifest.tables)
                conn.exec_driver_sql(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
            _check_empty(conn)
            reporter.phase("loading tables", total=manifest.total_rows)
            for entry in manifest.tables:
                _load_table(conn, folder / entry.file, entry, reporter)
            if postgres:
                _advance_sequences(conn, manifest)
            else:
                _check_foreign_keys(conn)
    finally:
        engine.dispose()
    return created


def check_target(settings: DatabaseSettings, manifest: Manifest) -> None:
    """Refuse early, changing nothing, a target `load_database` would refuse (before a long download)."""
    engine = sync_engine(settings)
    try:
        with engine.connect() as conn, conn.begin():
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None:
                _check_new(conn, manifest)
            else:
                _check_revision(current, manifest)
                _check_empty(conn)
    finally:
        engine.dispose()


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _prepare_schema(conn: Connection, settings: DatabaseSettings, manifest: Manifest) -> bool:
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        _check_new(conn, manifest)
        migrate_in(conn, settings, manifest.revision)
        return True
    _check_revision(current, manifest)
    return False


def _check_new(conn: Connection, manifest: Manifest) -> None:
    tables = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
    if tables:
        raise BackupError(
            f"the target database has tables ({', '.join(tables[:5])}) but no mlplatform schema "
            "revision: restore into a new, empty database"
        )
    try:
        known = ScriptDirectory(str(db.MIGRATIONS)).get_revision(manifest.revision)
    except CommandError:
        known = None
    if known is None:
        raise BackupError(
            f"the backup is at schema revision {manifest.revision}, which this mlplatform does not know "
            f"(it was made by mlplatform {manifest.mlplatform_version}): restore with that version or a "
            "later one"
        )


def _check_revision(current: str, manifest: Manifest) -> None:
    if current != manifest.revision:
        raise BackupError(
            f"the target database is at schema revision {current}, the backup at {manifest.revision}: "
            "restore into a new, empty database (or remove this one's tables with `mlplatform db "
            "downgrade base` first); restore migrates it to the backup's revision"
        )


def _check_columns(conn: Connection, manifest: Manifest) -> None:
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    for entry in manifest.tables:
        if entry.name not in existing:
            raise BackupError(f"table {entry.name} of the backup is not in the schema at {manifest.revision}")
        columns = {c["name"] for c in inspector.get_columns(entry.name)}
        missing = [c.name for c in entry.columns if c.name not in columns]
        if missing:
            raise BackupError(f"table {entry.name}: the schema has no column {', '.join(missing)}")


def _check_empty(conn: Connection) -> None:
    occupied = [
        name
        for name in sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
        if conn.execute(text(f"SELECT 1 FROM {_quote(conn, name)} LIMIT 1")).first() is not None
    ]
    if occupied:
        raise BackupError(
            f"the target database is not empty (rows in {', '.join(occupied)}): restore only into an "
            "empty database, so nothing is mixed or overwritten"
        )


def _statement(conn: Connection, entry: TableEntry) -> Insert:
    target = table(entry.name, *(column(c.name, _BIND_TYPES[c.kind]) for c in entry.columns))
    values: dict[str, ColumnElement[Any]] = {}
    for c in entry.columns:
        param: ColumnElement[Any] = bindparam(c.name, type_=_BIND_TYPES[c.kind])
        if c.kind == "json" and conn.dialect.name == "postgresql":
            param = cast(param, JSON)  # text in, a json value stored: not a JSON string of the text
        values[c.name] = param
    return insert(target).values(values)


def _rows(path: Path, entry: TableEntry) -> Iterator[dict[str, Any]]:
    decode = row_decoder([c.name for c in entry.columns], [c.kind for c in entry.columns])
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                yield decode(line)
            except (ValueError, TypeError) as exc:
                raise BackupError(f"{entry.file} line {number}: {exc}"[:500]) from None


def _load_table(conn: Connection, path: Path, entry: TableEntry, reporter: Reporter) -> None:
    statement = _statement(conn, entry)
    rows = _rows(path, entry)
    parents = _self_references(conn, entry.name)
    if parents:  # a row referring to another of its table goes after it
        rows = iter(_parents_first(list(rows), parents))
    loaded = 0
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            conn.execute(statement, batch)
            loaded += len(batch)
            reporter.advance(len(batch))
            batch = []
    if batch:
        conn.execute(statement, batch)
        loaded += len(batch)
        reporter.advance(len(batch))
    if loaded != entry.rows:
        raise BackupError(f"{entry.file}: {loaded} rows, the manifest says {entry.rows}")


def _self_references(conn: Connection, name: str) -> list[tuple[list[str], list[str]]]:
    return [
        (fk["constrained_columns"], fk["referred_columns"])
        for fk in inspect(conn).get_foreign_keys(name)
        if fk["referred_table"] == name
    ]


def _parents_first(
    rows: list[dict[str, Any]], references: list[tuple[list[str], list[str]]]
) -> list[dict[str, Any]]:
    """`rows` ordered so that each row comes after the rows it refers to (parent versions before children)."""
    ordered: list[dict[str, Any]] = []
    placed: set[tuple[Any, ...]] = set()
    waiting = rows
    while waiting:
        keys = {tuple(r[c] for c in referred) for r in waiting for _, referred in references}
        blocked: list[dict[str, Any]] = []
        for row in waiting:
            needs = [tuple(row[c] for c in child) for child, _ in references]
            if all(None in need or need in placed or need not in keys for need in needs):
                ordered.append(row)
                placed.update(tuple(row[c] for c in referred) for _, referred in references)
            else:
                blocked.append(row)
        if len(blocked) == len(waiting):
            raise BackupError("rows of a table refer to each other in a cycle")
        waiting = blocked
    return ordered


def _advance_sequences(conn: Connection, manifest: Manifest) -> None:
    """Each serial or identity column's sequence continues after the highest restored value."""
    for entry in manifest.tables:
        for c in entry.columns:
            if c.kind != "integer":
                continue
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": _quote(conn, entry.name), "column": c.name},
            ).scalar()
            if sequence is None:
                continue
            highest = f"SELECT MAX({_quote(conn, c.name)}) FROM {_quote(conn, entry.name)}"
            conn.execute(
                text(f"SELECT setval(:sequence, COALESCE(({highest}), 0) + 1, false)"),
                {"sequence": sequence},
            )


def _check_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise BackupError(f"rows of {', '.join(tables)} refer to rows the backup does not hold")
