"""Shadow traffic: requests mirrored to a shadow version after their answer, through a bounded queue.

The predict path only puts a job on the queue (never waits: a full queue drops the job and counts it); one
task takes the jobs one at a time, so a slow or failing shadow costs neither answers nor more than one
prediction's worth of work at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import structlog
from prometheus_client import Counter

from mlplatform.registry.snapshot import VersionEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowJob:
    entry: VersionEntry  # the shadow version
    arm: tuple[str, str]  # (experiment, the shadow variant's name)
    matrix: np.ndarray
    # The answer's log blocks: (first prediction id, rows) each. The shadow logs its predictions in the
    # same blocks, each with the answer block's first id as its request_id, so that the shadow's row at
    # position p pairs with the answered prediction `block_ids(first, p + 1)[-1]` (for a single prediction:
    # the answer's own id) and the feedback sent for the answers labels the shadow's predictions too.
    answered: tuple[tuple[str, int], ...]
    primary: np.ndarray  # what the answer said, row by row


class ShadowQueue:
    def __init__(self, run: Callable[[ShadowJob], Awaitable[None]], *, size: int, dropped: Counter) -> None:
        self.run = run
        self.queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=size)
        self.dropped = dropped
        self.task: asyncio.Task[None] | None = None

    def submit(self, job: ShadowJob) -> bool:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain(), name="shadow-traffic")
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped.labels(job.arm[0]).inc()
            return False
        return True

    async def _drain(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.run(job)
            except Exception:  # run_shadow never raises; this keeps the queue alive if it ever did
                log.exception("shadow job failed", version=job.entry.id)
            finally:
                self.queue.task_done()

    async def join(self) -> None:
        """Wait until every queued job has run (tests; shutdown drains nothing: shadows are best effort)."""
        await self.queue.join()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
