"""Training metrics: `ml_training_jobs{state}` from the database; `ml_training_duration_seconds{algorithm}`.

The database is the truth about jobs, so every instance reports the same cluster-wide counts (aggregate them
with `max`, not `sum`); they are re-counted every `REFRESH_SECONDS` and after every job this instance ends.
The duration is observed by the instance that saw a job succeed: from its start to its registered version.
"""

from __future__ import annotations

from typing import get_args

import structlog
from prometheus_client import Histogram

from mlplatform.metrics import Metrics, Reading
from mlplatform.periodic import PeriodicTask
from mlplatform.training.schemas import JobState, TrainingJobRead
from mlplatform.training.store import TrainingJobStore

log = structlog.get_logger(__name__)
REFRESH_SECONDS = 15.0
STATES: tuple[str, ...] = get_args(JobState)


class TrainingMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.counts: Reading = {}
        metrics.sampled(
            "ml_training_jobs",
            "Training jobs by state, counted in the shared database (the same on every instance: use max)",
            lambda: dict(self.counts),
            labels=["state"],
            mode="livemax",
        )
        self.duration = Histogram(
            "ml_training_duration_seconds",
            "Wall time of succeeded training jobs, from start to registered version, by algorithm",
            ["algorithm"],
            registry=metrics.registry,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
        )
        self._refresher: PeriodicTask | None = None

    async def refresh(self, store: TrainingJobStore) -> None:
        counts: Reading = {}
        for state in STATES:
            page = await store.list_jobs(model=None, state=state, limit=1, offset=0)  # type: ignore[arg-type]
            counts[(state,)] = float(page.total)
        self.counts = counts

    def finished(self, job: TrainingJobRead) -> None:
        if job.state == "succeeded" and job.started_at is not None and job.finished_at is not None:
            seconds = (job.finished_at - job.started_at).total_seconds()
            self.duration.labels(job.algorithm).observe(max(seconds, 0.0))

    def start(self, store: TrainingJobStore) -> None:
        if self._refresher is None:  # the database may be down for a while: the last counts stay
            self._refresher = PeriodicTask(
                "training-metrics",
                lambda: self.refresh(store),
                REFRESH_SECONDS,
                failure="training job counts not refreshed",
            )
            self._refresher.start()

    async def stop(self) -> None:
        if self._refresher is not None:
            await self._refresher.stop()
            self._refresher = None
