"""Prediction logs: a bounded queue off the hot path, flushed in batches (COPY on PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import select

from mlplatform.db import Database
from mlplatform.serving.schemas import PredictionLogRead
from mlplatform.serving.tables import PredictionLogRow

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    id: str
    model: str
    version: str
    variant: str | None
    request_id: str | None
    inputs: list[Any]
    prediction: Any
    probabilities: dict[str, float] | None
    confidence: float | None
    latency_ms: float
    cached: bool
    created_at: datetime


COLUMNS = tuple(f.name for f in fields(PredictionRecord))
assert COLUMNS[-2:] == ("cached", "created_at"), "_copy_values and _sqlite_values spell out this order"


class PredictionLogWriter:
    """Never blocks a prediction: `submit` drops (and counts) when the queue is full, e.g. while the database
    is slow or away; a background task writes batches of up to `batch_size` every `interval` seconds."""

    def __init__(
        self,
        database: Database,
        registry: CollectorRegistry,
        *,
        queue_size: int = 100_000,
        batch_size: int = 250,
        interval: float = 0.1,
    ) -> None:
        self.database = database
        self._sink: _Sink = _CopySink(database) if database.backend == "postgresql" else _SqliteSink(database)
        self.queue: asyncio.Queue[PredictionRecord] = asyncio.Queue(maxsize=queue_size)
        self.batch_size = batch_size
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.dropped = Counter(
            "ml_prediction_log_dropped_total",
            "Prediction log records dropped because the queue was full",
            registry=registry,
        )
        self.written = Counter(
            "ml_prediction_log_written_total", "Prediction log records written", registry=registry
        )
        self.failures = Counter(
            "ml_prediction_log_write_failures_total",
            "Failed prediction log batch writes",
            registry=registry,
        )
        Gauge(
            "ml_prediction_log_queue_depth",
            "Prediction log records waiting to be written",
            registry=registry,
        ).set_function(self.queue.qsize)

    def accepting(self, count: int = 1) -> bool:
        """Whether `count` more records fit; callers skip building records that would only be dropped."""
        if self.queue.maxsize - self.queue.qsize() >= count:
            return True
        self.dropped.inc(count)
        return False

    def submit(self, record: PredictionRecord) -> bool:
        try:
            self.queue.put_nowait(record)
            return True
        except asyncio.QueueFull:
            self.dropped.inc()
            return False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Write what is queued (bounded by `drain_timeout`), then stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(drain_timeout):
                while not self.queue.empty():
                    await self._write(self._take())
        await asyncio.to_thread(self._sink.close)

    def _take(self) -> list[PredictionRecord]:
        batch: list[PredictionRecord] = []
        while len(batch) < self.batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _run(self) -> None:
        backoff = self.interval
        pending: list[PredictionRecord] = []
        while True:
            if not pending:
                if self.queue.qsize() < self.batch_size:  # a full batch waiting is written at once
                    await asyncio.sleep(self.interval)
                pending = self._take()
                if not pending:
                    continue
            try:
                await self._write(pending)
                pending, backoff = [], self.interval
            except Exception as exc:  # keep the batch and retry; new records queue (or drop) meanwhile
                self.failures.inc()
                log.warning(
                    "prediction log write failed",
                    error=f"{type(exc).__name__}: {exc}"[:200],
                    rows=len(pending),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _write(self, batch: list[PredictionRecord]) -> None:
        """Serialise and write on a worker thread, so a large flush never stalls the event loop."""
        if batch:
            await asyncio.to_thread(self._sink.write, batch)
            self.written.inc(len(batch))

    async def query(
        self, *, model: str | None, start: datetime | None, end: datetime | None, limit: int
    ) -> list[PredictionLogRead]:
        statement = select(PredictionLogRow).order_by(PredictionLogRow.created_at.desc()).limit(limit)
        if model:
            statement = statement.where(PredictionLogRow.model == model)
        if start:
            statement = statement.where(PredictionLogRow.created_at >= start)
        if end:
            statement = statement.where(PredictionLogRow.created_at < end)
        async with self.database.session() as session:
            rows = (await session.scalars(statement)).all()
        return [_read(row) for row in rows]


def _read(row: PredictionLogRow) -> PredictionLogRead:
    return PredictionLogRead(
        prediction_id=row.id,
        model=row.model,
        version=row.version,
        variant=row.variant,
        request_id=row.request_id,
        inputs=row.inputs,
        prediction=row.prediction,
        probabilities=row.probabilities,
        confidence=row.confidence,
        latency_ms=row.latency_ms,
        cached=row.cached,
        created_at=row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC),
    )


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _copy_values(record: PredictionRecord) -> tuple[Any, ...]:
    """The row in `COLUMNS` order, JSON columns as text; spelled out because it runs for every prediction."""
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
    )


class _Sink:
    """A synchronous connection of the writer's own, used from one worker thread at a time."""

    def write(self, batch: list[PredictionRecord]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


class _CopySink(_Sink):
    """PostgreSQL: one COPY per batch on a psycopg connection kept open between batches."""

    def __init__(self, database: Database) -> None:
        self.dsn = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.timeout = max(1, database.settings.pool.connection_timeout // 1000)
        self.connection: psycopg.Connection[Any] | None = None

    def write(self, batch: list[PredictionRecord]) -> None:
        if self.connection is None or self.connection.closed:
            self.connection = psycopg.connect(self.dsn, connect_timeout=self.timeout)
        statement = f"COPY prediction_logs ({', '.join(COLUMNS)}) FROM STDIN"
        try:
            with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
                for record in batch:
                    copy.write_row(_copy_values(record))
            self.connection.commit()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None


class _SqliteSink(_Sink):
    """SQLite: executemany on a connection of its own, in the formats SQLAlchemy reads back."""

    def __init__(self, database: Database) -> None:
        self.path = database.url.database or ":memory:"
        self.connection: sqlite3.Connection | None = None
        columns = ", ".join(COLUMNS)
        self.statement = f"INSERT INTO prediction_logs ({columns}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def write(self, batch: list[PredictionRecord]) -> None:
        if self.connection is None:
            self.connection = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        with self.connection:
            self.connection.executemany(self.statement, [_sqlite_values(r) for r in batch])

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _sqlite_values(record: PredictionRecord) -> tuple[Any, ...]:
    at = record.created_at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return (*_copy_values(record)[:10], int(record.cached), at)
