"""Export every table of the database to local files, from one consistent snapshot.

PostgreSQL: one REPEATABLE READ, READ ONLY transaction (every table as of the same instant, writers not
blocked). SQLite: one read transaction (in WAL mode a snapshot too). Each table is a gzip file of JSON lines
(`codec`), rows in primary key order; its sha256 and row count go into the manifest.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Table, Text, cast, func, select

from mlplatform import __version__, db
from mlplatform.backups.codec import column_kind, row_encoder
from mlplatform.backups.engines import sync_engine
from mlplatform.backups.manifest import LOG_TABLES, BackupError, ColumnEntry, Manifest, TableEntry
from mlplatform.backups.progress import Reporter
from mlplatform.settings import DatabaseSettings
from mlplatform.tables import metadata

BATCH_ROWS = 2000


class _HashingWriter:
    """A binary file that hashes and counts what goes through it."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def backup_tables(with_logs: bool) -> list[Table]:
    """The tables a backup holds, parents before children."""
    return [t for t in metadata.sorted_tables if with_logs or t.name not in LOG_TABLES]


def export_database(
    settings: DatabaseSettings,
    folder: Path,
    *,
    backup_id: str,
    created_at: datetime,
    with_logs: bool,
    reporter: Reporter,
) -> Manifest:
    """Write each table to `folder/<table>.jsonl.gz` from one snapshot; the manifest describing them."""
    engine = sync_engine(settings)
    backend = engine.dialect.name
    tables = backup_tables(with_logs)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                # The snapshot starts with this first read: the revision and every row are of one instant.
                revision = MigrationContext.configure(conn).get_current_revision()
                head = db.head_revision()
                if revision != head:
                    raise BackupError(
                        f"the database schema is at revision {revision}, this mlplatform ({__version__}) "
                        f"knows the tables of revision {head}: run `mlplatform db upgrade` first, or back up "
                        "with the mlplatform version that matches the database"
                    )
                counts = {t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in tables}
                reporter.phase("exporting tables", total=sum(counts.values()))
                entries = [_export_table(conn, table, folder, reporter) for table in tables]
    finally:
        engine.dispose()
    return Manifest(
        id=backup_id,
        created_at=created_at,
        mlplatform_version=__version__,
        revision=head or "",
        database=backend,
        with_logs=with_logs,
        tables=entries,
        skipped=[] if with_logs else [t.name for t in metadata.sorted_tables if t.name in LOG_TABLES],
    )


def _export_table(conn: Connection, table: Table, folder: Path, reporter: Reporter) -> TableEntry:
    kinds = [column_kind(column) for column in table.columns]
    # JSON documents as their stored text: nothing re-serialised, and JSON null stays apart from SQL NULL.
    selected: list[Any] = [
        cast(column, Text).label(column.name) if kind == "json" else column
        for column, kind in zip(table.columns, kinds, strict=True)
    ]
    query = select(*selected).order_by(*table.primary_key.columns)
    if conn.dialect.name == "postgresql":
        result = conn.execution_options(yield_per=BATCH_ROWS).execute(query)  # a server-side cursor
    else:
        result = conn.execute(query)
    encode = row_encoder(kinds)
    name = f"{table.name}.jsonl.gz"
    writer = _HashingWriter(folder / name)
    rows = 0
    try:
        with gzip.GzipFile(filename="", mode="wb", fileobj=writer, compresslevel=6, mtime=0) as packed:
            for part in result.partitions(BATCH_ROWS):
                packed.write("".join(encode(row) for row in part).encode())
                rows += len(part)
                reporter.advance(len(part))
    finally:
        writer.close()
    return TableEntry(
        name=table.name,
        file=name,
        rows=rows,
        bytes=writer.size,
        sha256=writer.sha256.hexdigest(),
        columns=[ColumnEntry(name=c.name, kind=k) for c, k in zip(table.columns, kinds, strict=True)],
    )
