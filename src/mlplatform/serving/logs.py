"""Prediction logs: a bounded queue off the hot path, flushed in batches (COPY on PostgreSQL), and queried."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from datetime import datetime

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import aliased

from mlplatform.bounds import NUL_PROBLEM
from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import InvalidInput
from mlplatform.ids import block_ids
from mlplatform.serving.log_sinks import BatchRecord, LogRecord, PredictionRecord, sink_for
from mlplatform.serving.schemas import PredictionLogRead
from mlplatform.serving.tables import PredictionBatchRow, PredictionLogRow

__all__ = ["BatchRecord", "PredictionLogWriter", "PredictionRecord"]
log = structlog.get_logger(__name__)
DRAIN_SECONDS = 1.0  # the longest the writer's thread keeps writing before it checks in with the event loop


class PredictionLogWriter:
    """Never blocks a prediction: `submit` drops (and counts) when the queue is full, e.g. while the database
    is slow or away; a background task writes about `batch_size` predictions every `interval` seconds. The
    queue is bounded in predictions (`queue_size`), whether they come one by one or in batches."""

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
        self._sink = sink_for(database)
        self.queue: deque[LogRecord] = deque()
        self.queue_size = queue_size
        self._queued = self._taken = 0  # predictions ever queued, and taken by the writer
        self._pending: list[LogRecord] = []  # taken, not yet written (kept for a retry when a write fails)
        self._sink_lock = threading.Lock()
        self._inflight: asyncio.Future[None] | None = None
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

    @property
    def depth(self) -> int:
        """Predictions queued. Each counter has one writer thread (the event loop adds, the writer's worker
        thread takes), so no lock is needed for a value that is only ever a gauge or a bound."""
        return self._queued - self._taken

    def accepting(self, count: int = 1) -> bool:
        """Whether `count` more predictions fit; callers skip building records that would only be dropped."""
        if self.queue_size - self.depth >= count:
            return True
        self.dropped.inc(count)
        return False

    def submit(self, record: LogRecord) -> bool:
        count = record.count
        if self.queue_size - self.depth < count:
            self.dropped.inc(count)
            return False
        self.queue.append(record)
        self._queued += count
        return True

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
                if self._inflight is not None:
                    with contextlib.suppress(Exception):
                        await self._inflight
                while self._pending or self.queue:
                    self._pending = self._pending or self._take()
                    await asyncio.to_thread(self._drain)
        await asyncio.to_thread(self._close)

    def _take(self) -> list[LogRecord]:
        """Records worth about `batch_size` predictions (a large batch record alone may be more)."""
        taken: list[LogRecord] = []
        count = 0
        while self.queue and count < self.batch_size:
            record = self.queue.popleft()
            taken.append(record)
            count += record.count
        self._taken += count
        return taken

    async def _run(self) -> None:
        backoff = self.interval
        while True:
            if not self._pending:
                if self.depth < self.batch_size:  # a full batch waiting is written at once
                    await asyncio.sleep(self.interval)
                self._pending = self._take()
                if not self._pending:
                    continue
            try:
                # Shielded: when the task is cancelled, `stop` waits for this write instead of racing it.
                self._inflight = asyncio.get_running_loop().run_in_executor(None, self._drain)
                await asyncio.shield(self._inflight)
                backoff = self.interval
            except Exception as exc:  # `_pending` keeps the failed batch for a retry; new records queue
                self.failures.inc()
                log.warning(
                    "prediction log write failed",
                    error=f"{type(exc).__name__}: {exc}"[:200],
                    rows=sum(r.count for r in self._pending),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _drain(self) -> None:
        """On a worker thread: write `_pending`, then full batches queued meanwhile, up to `DRAIN_SECONDS`.

        Going back to the event loop between batches would cost a loop turn per batch, and under load a
        turn lasts as long as a batch request's parsing: the writer then fell behind and dropped."""
        deadline = time.monotonic() + DRAIN_SECONDS
        with self._sink_lock:  # `stop` may drain while a cancelled `_run` still has a write in flight
            while self._pending:
                self._sink.write(self._pending)
                self.written.inc(sum(r.count for r in self._pending))
                more = self.depth >= self.batch_size and time.monotonic() < deadline
                self._pending = self._take() if more else []  # else `_run` waits for a fuller batch

    def _close(self) -> None:
        with self._sink_lock:
            self._sink.close()

    async def query(
        self, *, model: str | None, start: datetime | None, end: datetime | None, limit: int
    ) -> list[PredictionLogRead]:
        """The newest `limit` predictions, single and batched, newest first."""
        if model is not None and "\x00" in model:  # PostgreSQL refuses NUL in text
            raise InvalidInput(f"model: {NUL_PROBLEM}", details=[{"field": "model", "problem": NUL_PROBLEM}])
        singles = select(PredictionLogRow).where(*_filters(PredictionLogRow, model, start, end))
        singles = singles.order_by(PredictionLogRow.created_at.desc()).limit(limit)
        # Batch rows hold many predictions: take the newest ones until `limit` predictions are covered.
        newest = (PredictionBatchRow.created_at.desc(), PredictionBatchRow.id.desc())
        running = func.sum(PredictionBatchRow.count).over(order_by=newest).label("running")
        conditions = _filters(PredictionBatchRow, model, start, end)
        ranked = select(PredictionBatchRow, running).where(*conditions).subquery()
        batch = aliased(PredictionBatchRow, ranked)
        batches = (
            select(batch)
            .where(ranked.c.running - ranked.c.count < limit)
            .order_by(batch.created_at.desc(), batch.id.desc())
        )
        async with self.database.session() as session:
            found = [_read_single(row) for row in (await session.scalars(singles)).all()]
            for row in (await session.scalars(batches)).all():
                found += _read_batch(row)
        found.sort(key=lambda entry: entry.created_at, reverse=True)  # stable: a batch keeps its order
        return found[:limit]


def _filters(
    table: type[PredictionLogRow] | type[PredictionBatchRow],
    model: str | None,
    start: datetime | None,
    end: datetime | None,
) -> list[ColumnElement[bool]]:
    conditions = []
    if model:
        conditions.append(table.model == model)
    if start:
        conditions.append(table.created_at >= start)
    if end:
        conditions.append(table.created_at < end)
    return conditions


def _read_single(row: PredictionLogRow) -> PredictionLogRead:
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
        created_at=as_utc(row.created_at),
    )


def _read_batch(row: PredictionBatchRow) -> list[PredictionLogRead]:
    created_at = as_utc(row.created_at)
    inputs = _matrix(row.inputs_f64, row.count) if row.inputs_f64 is not None else row.inputs
    probabilities: list[list[float]] | list[None] = [None] * row.count
    if row.probabilities_f64 is not None:  # written since migration 0007
        probabilities = _matrix(row.probabilities_f64, row.count)
    elif row.probabilities:  # JSON, written before it
        probabilities = [*row.probabilities]
    entries = []
    for id_, features, prediction, probs in zip(
        block_ids(row.id, row.count), inputs or [], row.predictions, probabilities, strict=True
    ):
        by_class = dict(zip(row.classes, probs, strict=True)) if row.classes and probs else None
        entries.append(
            PredictionLogRead(
                prediction_id=id_,
                model=row.model,
                version=row.version,
                variant=row.variant,
                request_id=row.request_id,
                inputs=features,
                prediction=prediction,
                probabilities=by_class,
                confidence=max(probs) if probs else None,
                latency_ms=row.latency_ms,
                cached=False,
                created_at=created_at,
            )
        )
    return entries


def _matrix(data: bytes, count: int) -> list[list[float]]:
    values: list[list[float]] = np.frombuffer(data, dtype="<f8").reshape(count, -1).tolist()
    return values
