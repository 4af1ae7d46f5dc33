"""A background loop: one step every `interval` seconds, from start until stop.

The platform's housekeeping (scheduled backups, monitoring checks, the experiment supervisor, training job
counts, the training reconciler, serving stats) each run one. A step that fails is logged and the next round
tries again: a database or cache away for a while never ends the loop. Stopping lets a step in progress end
(for a second) rather than cancel a database call half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)
STOP_GRACE_SECONDS = 1.0  # a database call takes milliseconds; a hung one is cancelled


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
        self._stopping = asyncio.Event()
        self._stepping = False

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """End the loop. A step in progress may finish within `grace` seconds (a database call cancelled
        half-way can outlive the app on its driver's thread), then it is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._stepping:
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _seconds(self) -> float:
        return self.interval() if callable(self.interval) else self.interval

    async def _pause(self) -> bool:
        """Wait one interval; True when the loop is to end."""
        seconds = self._seconds()
        if seconds <= 0:
            await asyncio.sleep(0)  # the event loop gets its turn
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _loop(self) -> None:
        if self.wait_first and await self._pause():
            return
        while True:
            self._stepping = True
            try:
                await self.step()
            except Exception as exc:
                log.warning(self.failure, error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                self._stepping = False
            if self._stopping.is_set() or await self._pause():
                return
