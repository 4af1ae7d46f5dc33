"""The background loop that supervises running experiments every few seconds, on every instance."""

from __future__ import annotations

import structlog

from mlplatform.experiments.service import ExperimentService
from mlplatform.periodic import PeriodicTask

log = structlog.get_logger(__name__)


class ExperimentSupervisor:
    """Saves this process's experiment tallies and calls `ExperimentService.supervise` every `interval`
    seconds until stopped (saving once more then). Every instance runs one: each change it makes is a
    conditional update in the database, so two instances never both act."""

    def __init__(self, service: ExperimentService, *, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._loop = PeriodicTask(
            "experiment-supervisor",
            self._round,
            interval,
            failure="experiment supervision skipped",  # the database may be away for a while
            wait_first=True,
        )

    def start(self) -> None:
        self._loop.start()

    async def _round(self) -> None:
        await self.service.save_tallies()  # first, so the guards see this instance's latest counts
        for action in await self.service.supervise():
            log.info("experiment supervised", action=action)

    async def stop(self) -> None:
        if self._loop.running:
            await self._loop.stop()
            try:  # what this process counted since the last round
                await self.service.save_tallies()
            except Exception as exc:
                log.warning("experiment tallies not saved", error=f"{type(exc).__name__}: {exc}"[:300])
