"""`PredictionLogStore.append` on each database: COPY on PostgreSQL, executemany on SQLite."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import psycopg

from mlplatform.db import Database
from mlplatform.stores.predictions.base import BatchRecord, LogRecord, PredictionRecord

SINGLE_COLUMNS = (
    "id",
    "model",
    "version",
    "variant",
    "request_id",
    "inputs",
    "prediction",
    "probabilities",
    "confidence",
    "latency_ms",
    "cached",
    "created_at",
    "experiment",
)
BATCH_COLUMNS = (
    "id",
    "count",
    "model",
    "version",
    "variant",
    "request_id",
    "inputs",
    "inputs_f64",
    "predictions",
    "classes",
    "probabilities_f64",
    "latency_ms",
    "created_at",
    "experiment",
)


def _json(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":  # string labels, mixed inputs
        value = value.tolist()
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _single_values(record: PredictionRecord) -> tuple[Any, ...]:
    """The row in `SINGLE_COLUMNS` order, JSON columns as text; spelled out as it runs per prediction."""
    return (
        record.id,
        record.model,
        record.version,
        record.variant,
        record.request_id,
        _json(record.inputs),
        _json(record.prediction),
        _json(record.probabilities),
        record.confidence,
        record.latency_ms,
        record.cached,
        record.created_at,
        record.experiment,
    )


def _float64(values: np.ndarray) -> bytes:
    """Little-endian float64, row-major: what the `*_f64` columns hold (`tables.PredictionBatchRow`)."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def _batch_values(record: BatchRecord) -> tuple[Any, ...]:
    inputs, probabilities = record.inputs, record.probabilities
    numeric = inputs.dtype.kind in "biuf"
    return (
        record.first_id,
        record.count,
        record.model,
        record.version,
        record.variant,
        record.request_id,
        None if numeric else _json(np.ascontiguousarray(inputs)),
        _float64(inputs) if numeric else None,
        _json(np.ascontiguousarray(record.predictions)),
        _json(record.classes),
        None if probabilities is None else _float64(probabilities),
        record.latency_ms,
        record.created_at,
        record.experiment,
    )


def _split(records: Iterable[LogRecord]) -> tuple[list[PredictionRecord], list[BatchRecord]]:
    singles: list[PredictionRecord] = []
    batches: list[BatchRecord] = []
    for record in records:
        (singles if isinstance(record, PredictionRecord) else batches).append(record)  # type: ignore[arg-type]
    return singles, batches


class Appender:
    """A synchronous connection of the log writer's own, used from one worker thread at a time."""

    def write(self, records: Sequence[LogRecord]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


class CopyAppender(Appender):
    """PostgreSQL: one COPY per table and batch on a psycopg connection kept open between batches."""

    def __init__(self, database: Database) -> None:
        self.dsn = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.timeout = max(1, database.settings.pool.connection_timeout // 1000)
        self.connection: psycopg.Connection[Any] | None = None

    def write(self, records: Sequence[LogRecord]) -> None:
        if self.connection is None or self.connection.closed:
            self.connection = psycopg.connect(self.dsn, connect_timeout=self.timeout)
        singles, batches = _split(records)
        try:
            with self.connection.cursor() as cursor:
                self._copy(cursor, "prediction_logs", SINGLE_COLUMNS, singles, _single_values)
                self._copy(cursor, "prediction_batches", BATCH_COLUMNS, batches, _batch_values)
            self.connection.commit()
        except Exception:
            self.close()
            raise

    @staticmethod
    def _copy(
        cursor: psycopg.Cursor[Any],
        table: str,
        columns: Sequence[str],
        records: Sequence[Any],
        values: Callable[[Any], tuple[Any, ...]],
    ) -> None:
        if records:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for record in records:
                    copy.write_row(values(record))

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None


class SqliteAppender(Appender):
    """SQLite: executemany on a connection of its own, in the formats SQLAlchemy reads back."""

    def __init__(self, database: Database) -> None:
        self.path = database.url.database or ":memory:"
        self.connection: sqlite3.Connection | None = None

    def write(self, records: Sequence[LogRecord]) -> None:
        if self.connection is None:
            self.connection = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
            # The database is in WAL mode: NORMAL skips the fsync per commit (a commit every 0.1 s or
            # 250 predictions) and can lose only the last commits on a power cut, never corrupt the file.
            self.connection.execute("PRAGMA synchronous=NORMAL")
        singles, batches = _split(records)
        with self.connection:
            if singles:
                self.connection.executemany(
                    _insert("prediction_logs", SINGLE_COLUMNS), [_sqlite_single(r) for r in singles]
                )
            if batches:
                self.connection.executemany(
                    _insert("prediction_batches", BATCH_COLUMNS), [_sqlite_batch(r) for r in batches]
                )

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _sqlite_time(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _sqlite_single(record: PredictionRecord) -> tuple[Any, ...]:
    return (
        *_single_values(record)[:10],
        int(record.cached),
        _sqlite_time(record.created_at),
        record.experiment,
    )


def _sqlite_batch(record: BatchRecord) -> tuple[Any, ...]:
    return (*_batch_values(record)[:-2], _sqlite_time(record.created_at), record.experiment)


def appender_for(database: Database) -> Appender:
    return CopyAppender(database) if database.backend == "postgresql" else SqliteAppender(database)
