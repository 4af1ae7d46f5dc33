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
    the loser learns it from the returned False. `start` and `claim` count an attempt. `report` records
    progress and the heartbeat of a running job only. Listings are newest first (`created_at`, then `id`,
    descending) and `total` counts every match. Unknown ids raise `NotFound`.

    Leases: one server instance at a time follows a running job (`lease_owner` until `lease_expires_at`).
    `claim` is the only way to take one, a single conditional update, so of two instances claiming at once
    exactly one wins, even on PostgreSQL. Calls given an `owner` change the job only while that owner holds
    its lease; an instance that lost it learns so from the returned False and must stop following the job.
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
    async def report(
        self,
        job_id: str,
        progress: JobProgress,
        *,
        worker: str | None,
        at: datetime,
        owner: str | None = None,
        lease_until: datetime | None = None,
        resumed_from: int | None = None,
    ) -> bool:
        """Progress and heartbeat of a running job (with `owner`: only while it holds the lease, which then
        runs until `lease_until`); False when it is not running or the lease is someone else's."""

    @abstractmethod
    async def claim(
        self, job_id: str, *, owner: str, at: datetime, lease_until: datetime
    ) -> TrainingJobRead | None:
        """Take the lease of a queued job, or of a running one whose lease expired before `at` or was
        released: it is then running (attempt + 1, heartbeat at `at`, `resumed_from` cleared) and followed
        by `owner` until `lease_until`. None when another instance holds it or the job has finished."""

    @abstractmethod
    async def release(self, job_id: str, *, owner: str) -> bool:
        """Hand a running job back (a graceful stop): the lease is cleared and the interrupted run is not
        counted as an attempt (attempt - 1), so the next `claim` resumes it under the same number.
        The state stays `running`. False when `owner` did not hold the lease."""

    @abstractmethod
    async def retry(self, job_id: str, *, owner: str, at: datetime, error: str) -> int | None:
        """Record that the run of a job was lost (its worker died) and that another begins: attempt + 1,
        `error` the reason (kept while the job runs, replaced when it finishes). Returns the new attempt
        number; None when `owner` does not hold the lease."""

    @abstractmethod
    async def stale(self, *, at: datetime, queued_before: datetime, limit: int = 100) -> list[str]:
        """Ids of jobs nobody follows: running with a lease expired before `at` or released, and queued
        since before `queued_before` (the instance that queued them did not claim them), oldest first."""

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
        timings: dict[str, float] | None = None,
        error: str | None = None,
        version_id: str | None = None,
        progress: JobProgress | None = None,
        owner: str | None = None,
    ) -> bool:
        """queued or running → a terminal `state` (the lease cleared); False (and no change) when the job had
        already finished, or, with `owner`, when that owner does not hold the lease."""

    @abstractmethod
    async def record_trials(self, job_id: str, trials: list[TrainingTrialRead]) -> None:
        """Store trials of the job's search; a trial recorded again (same number) replaces the earlier one."""

    @abstractmethod
    async def list_trials(self, job_id: str) -> list[TrainingTrialRead]:
        """The job's trials by number (`best` is left False: the service knows the metric)."""
