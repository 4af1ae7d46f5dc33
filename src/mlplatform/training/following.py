"""Following one run of a job on Dask, from the instance that holds the job's lease.

Progress read from the run's Dask `Variable` goes to the database with the heartbeat, which renews the lease;
a cancel asked for in the database sets the run's Dask `Event`; a re-run by Dask (its worker died) counts as
a new attempt. The database stays the truth: a follower that lost the lease stops (`LeaseLost`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from mlplatform.clock import utcnow
from mlplatform.settings import JobsSettings
from mlplatform.training.recovery import LeaseLost, lost_run
from mlplatform.training.schemas import JobProgress, TrainingJobRead
from mlplatform.training.store import TrainingJobStore

log = structlog.get_logger(__name__)
POLL_SECONDS = 0.25  # progress is read from Dask this often; the cancel flag from the database every 4th time
PROGRESS_READ_SECONDS = 5.0
STOP_WAIT_SECONDS = 2.0  # a stopping instance waits this long for a run it stopped (boosting stops within it)


@dataclass(frozen=True)
class GaveUp:
    """The run's worker died once too often: the job fails with this reason."""

    reason: str


class RunFollower:
    def __init__(
        self,
        *,
        store: TrainingJobStore,
        settings: JobsSettings,
        owner: str,
        job: TrainingJobRead,
        future: Any,
        progress: Any,
        cancel: Any,
        on_report: Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        """`on_report(latest, previous)` sees each new report of the worker before it is recorded (a search
        stores its finished trials from it)."""
        self.store = store
        self.settings = settings
        self.owner = owner
        self.job = job
        self.future = future
        self.progress = progress
        self.cancel = cancel
        self.on_report = on_report
        self.seen: dict[str, Any] = {}
        self.runs: list[str] = []  # the run tokens seen: a new one is Dask running the task again
        self.rerun: str | None = None  # why a new run token appeared: the previous run's worker died

    async def until_done(self) -> dict[str, Any] | str | GaveUp:
        """Follow the run until its task ends: its result, or the reason it was lost (a retry may resume
        it), or `GaveUp` when Dask ran it again once too often."""
        job_id = self.job.id
        beat_every = max(1, round(self.settings.heartbeat_seconds / POLL_SECONDS))
        polls = 0
        while not self.future.done():
            await asyncio.sleep(POLL_SECONDS)
            polls += 1
            await self.report(beat=polls % beat_every == 0)
            if self.rerun is not None:  # Dask ran the task again: its worker died
                lost, self.rerun = self.rerun, None
                if self.job.attempt >= self.settings.max_attempts:
                    await self.stop()  # before the job ends, so that no checkpoint comes after
                    return GaveUp(f"gave up after {self.settings.max_attempts} attempts; last: {lost}")
                if await self.store.retry(job_id, owner=self.owner, at=utcnow(), error=lost) is None:
                    raise LeaseLost
                self.job = await self.store.get(job_id)
                log.warning("training run lost; Dask runs it again", job=job_id, attempt=self.job.attempt)
            if polls % 4 == 0 and await self._cancel_asked():
                await self.cancel.set()
        await self.report(beat=True)
        try:
            result: dict[str, Any] = await self.future
        except Exception as exc:
            if (reason := lost_run(exc)) is not None:
                return reason
            raise
        return result

    async def stop(self) -> None:
        """Ask the run to stop and wait a little for it (boosting stops within a fraction of a second)."""
        with contextlib.suppress(Exception):
            await self.cancel.set()
            await asyncio.wait_for(asyncio.shield(self.future), timeout=STOP_WAIT_SECONDS)

    async def _cancel_asked(self) -> bool:
        try:
            return (await self.store.get(self.job.id)).cancel_requested
        except Exception:  # a database blip: look again at the next poll
            return False

    def _saw(self, latest: dict[str, Any]) -> bool:
        """Take in a report; False when it is the first of a re-run, recorded once the new attempt is."""
        token = latest.get("run")
        if token and token not in self.runs:
            self.runs.append(token)
            if len(self.runs) > 1:
                self.rerun = f"worker {self.seen.get('worker') or 'unknown'} died while it trained"
                return False
        self.seen = latest
        return True

    async def report(self, *, beat: bool, read: bool = True) -> None:
        """Record what the worker last reported when it changed, and renew the lease with each heartbeat
        (`read=False`: the heartbeat only); `LeaseLost` when the lease is no longer this instance's."""
        latest = None
        if read:
            with contextlib.suppress(TimeoutError):  # the scheduler is slow or away: no news this time
                latest = await self.progress.get(timeout=PROGRESS_READ_SECONDS)
        changed = bool(latest) and latest != self.seen
        if not (changed or beat):
            return
        if changed and latest and self.on_report is not None:
            await self.on_report(latest, self.seen)
        if changed and latest and not self._saw(latest):
            return  # a re-run: its progress is recorded under the new attempt, at the next poll
        seen = self.seen
        try:
            renewed = await self.store.report(
                self.job.id,
                JobProgress.model_validate(seen["progress"]) if seen else self.job.progress,
                worker=seen.get("worker"),
                at=utcnow(),
                owner=self.owner,
                lease_until=utcnow() + timedelta(seconds=self.settings.lease_seconds),
                resumed_from=seen.get("resumed_from"),
            )
        except Exception as exc:  # a database blip: the run goes on; the lease outlives a few missed beats
            error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("training heartbeat not recorded", job=self.job.id, error=error)
            return
        if not renewed:
            raise LeaseLost
