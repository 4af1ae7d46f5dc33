"""A background loop: one step every `interval` seconds, from start until stop.

The platform's housekeeping (scheduled backups, monitoring checks, the experiment supervisor, training job
counts, the training reconciler) each run one. A step that fails is logged and the next round tries again:
a database or cache away for a while never ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class PeriodicTask:
    """Runs `step` now (or after one interval, with `wait_first`) and then every `interval` seconds."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval: float | Callable[[], float],
        *,
        failure: str,
        wait_first: bool = False,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.failure = failure  # the log event of a failed step
        self.wait_first = wait_first
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it (a step in progress is cancelled)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _seconds(self) -> float:
        return self.interval() if callable(self.interval) else self.interval

    async def _loop(self) -> None:
        if self.wait_first:
            await asyncio.sleep(self._seconds())
        while True:
            try:
                await self.step()
            except Exception as exc:
                log.warning(self.failure, error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(self._seconds())
