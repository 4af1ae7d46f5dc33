"""Prediction logs: a bounded queue off the hot path, flushed in batches to the prediction log store."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import asdict
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry, Counter

from mlplatform.serving.schemas import PredictionLogRead
from mlplatform.stores.predictions import BatchRecord, LogRecord, PredictionLogStore, PredictionRecord

__all__ = ["BatchRecord", "PredictionLogWriter", "PredictionRecord"]
log = structlog.get_logger(__name__)
DRAIN_SECONDS = 1.0  # the longest the writer's thread keeps writing before it checks in with the event loop


class PredictionLogWriter:
    """Never blocks a prediction: `submit` drops (and counts) when the queue is full, e.g. while the database
    is slow or away; a background task writes about `batch_size` predictions every `interval` seconds. The
    queue is bounded in predictions (`queue_size`), whether they come one by one or in batches."""

    def __init__(
        self,
        store: PredictionLogStore,
        registry: CollectorRegistry,
        *,
        queue_size: int = 100_000,
        batch_size: int = 250,
        interval: float = 0.1,
    ) -> None:
        self.store = store
        self.queue: deque[LogRecord] = deque()
        self.queue_size = queue_size
        self._queued = self._taken = 0  # predictions ever queued, and taken by the writer
        self._pending: list[LogRecord] = []  # taken, not yet written (kept for a retry when a write fails)
        self._append_lock = threading.Lock()
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
        with self._append_lock:  # `stop` may drain while a cancelled `_run` still has a write in flight
            while self._pending:
                self.store.append(self._pending)
                self.written.inc(sum(r.count for r in self._pending))
                more = self.depth >= self.batch_size and time.monotonic() < deadline
                self._pending = self._take() if more else []  # else `_run` waits for a fuller batch

    def _close(self) -> None:
        with self._append_lock:
            self.store.close_appender()

    async def query(
        self,
        *,
        model: str | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        version: str | None = None,
        request_id: str | None = None,
    ) -> list[PredictionLogRead]:
        """The newest `limit` predictions, single and batched, newest first."""
        found = await self.store.query(
            model=model, version=version, request_id=request_id, start=start, end=end, limit=limit
        )
        return [PredictionLogRead(**asdict(entry)) for entry in found]
