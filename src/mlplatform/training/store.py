"""Training job persistence: the interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from mlplatform.training.schemas import JobProgress, JobState, Page, TrainingJobRead, TrainingTrialRead


class TrainingJobStore(ABC):
    """Training jobs, the truth about each one's state.

    Contract: `create` inserts the job exactly as given (the service chose the id and the time). A job only
    moves forward: `queued → running → succeeded | failed | cancelled`, or `queued → cancelled`; every
    transition is one conditional update, so two callers racing (a cancel and a finish) cannot both win, and
    the loser learns it from the returned False. `start` counts an attempt. `report` records progress and the
    heartbeat of a running job only. Listings are newest first (`created_at`, then `id`, descending) and
    `total` counts every match. Unknown ids raise `NotFound`.
    """

    @abstractmethod
    async def create(self, job: TrainingJobRead) -> None: ...

    @abstractmethod
    async def get(self, job_id: str) -> TrainingJobRead: ...

    @abstractmethod
    async def list_jobs(
        self, *, model: str | None, state: JobState | None, limit: int, offset: int
    ) -> Page[TrainingJobRead]: ...

    @abstractmethod
    async def start(self, job_id: str, *, worker: str | None, at: datetime) -> bool:
        """queued → running (attempt + 1, started and heartbeat at `at`); False when the job is not queued."""

    @abstractmethod
    async def report(self, job_id: str, progress: JobProgress, *, worker: str | None, at: datetime) -> bool:
        """Progress and heartbeat of a running job; False when it is not running."""

    @abstractmethod
    async def request_cancel(self, job_id: str) -> TrainingJobRead:
        """Mark the job's cancel as asked for (a no-op on a finished job); returns the job."""

    @abstractmethod
    async def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        at: datetime,
        metrics: dict[str, float] | None = None,
        error: str | None = None,
        version_id: str | None = None,
        progress: JobProgress | None = None,
    ) -> bool:
        """queued or running → a terminal `state`; False (and no change) when the job had already finished."""

    @abstractmethod
    async def record_trials(self, job_id: str, trials: list[TrainingTrialRead]) -> None:
        """Store trials of the job's search; a trial recorded again (same number) replaces the earlier one."""

    @abstractmethod
    async def list_trials(self, job_id: str) -> list[TrainingTrialRead]:
        """The job's trials by number (`best` is left False: the service knows the metric)."""
