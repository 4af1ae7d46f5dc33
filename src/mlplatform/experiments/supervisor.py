"""The background loop that supervises running experiments every few seconds, on every instance."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from mlplatform.experiments.service import ExperimentService

log = structlog.get_logger(__name__)


class ExperimentSupervisor:
    """Saves this process's experiment tallies and calls `ExperimentService.supervise` every `interval`
    seconds until stopped (saving once more then). Every instance runs one: each change it makes is a
    conditional update in the database, so two instances never both act."""

    def __init__(self, service: ExperimentService, *, interval: float) -> None:
        self.service = service
        self.interval = interval
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name="experiment-supervisor")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.service.save_tallies()  # first, so the guards see this instance's latest counts
                for action in await self.service.supervise():
                    log.info("experiment supervised", action=action)
            except Exception as exc:  # the database may be away for a while: the next round tries again
                log.warning("experiment supervision skipped", error=f"{type(exc).__name__}: {exc}"[:300])

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
            try:  # what this process counted since the last round
                await self.service.save_tallies()
            except Exception as exc:
                log.warning("experiment tallies not saved", error=f"{type(exc).__name__}: {exc}"[:300])
