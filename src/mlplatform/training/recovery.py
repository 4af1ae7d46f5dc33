"""Keeping jobs alive across dying workers and instances: which errors mean a lost run, and the reconciler.

Every instance runs a reconciler; the database lease (`TrainingJobStore.claim`) makes that safe: of the
instances that find the same unfollowed job, one claims it and resumes it from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import structlog

from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.periodic import PeriodicTask
from mlplatform.settings import JobsSettings
from mlplatform.training.store import TrainingJobStore

log = structlog.get_logger(__name__)


def instance_id() -> str:
    """This server process, as a lease owner: host, process id and a random part (ids are never reused)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{new_id()[-8:]}"


class LeaseLost(Exception):
    """Another instance took over the job (this one stalled past its lease), or the job ended elsewhere."""


class PeerLost(RuntimeError):
    """A distributed run failed because one of the workers training it went away (a training error of its
    own fails the job instead). Raised by the run's task so the job is run again, from its checkpoint."""


def lost_run(error: BaseException) -> str | None:
    """Why a run was lost when `error` means its worker (or the way to it) went away, not a training error;
    None for an error of the training itself, which fails the job at once."""
    import distributed
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    killed: type[BaseException] = distributed.KilledWorker
    if isinstance(error, PeerLost):
        return str(error)[:1000]
    if isinstance(error, killed):
        return f"Dask gave up on the task after its workers died: {error}"[:1000]
    if isinstance(error, FutureCancelledError):
        return f"Dask cancelled the task (the scheduler or its connection was lost): {error}"[:1000]
    if isinstance(error, CommClosedError):
        return f"the connection to Dask was lost: {type(error).__name__}: {error}"[:1000]
    return None


class Reconciler:
    """Every `jobs.reconcile-seconds`, the jobs nobody follows (a running job's lease expired or was released,
    a queued job was never claimed) are handed to `follow`, which claims and resumes them."""

    def __init__(
        self, *, store: TrainingJobStore, settings: JobsSettings, follow: Callable[[str], None]
    ) -> None:
        self.store = store
        self.settings = settings
        self.follow = follow
        self._loop = PeriodicTask(
            "training-reconciler",
            self.reconcile,
            lambda: self.settings.reconcile_seconds,
            failure="training reconciler failed",
        )

    async def reconcile(self) -> list[str]:
        """One pass; the ids handed over."""
        now = utcnow()
        queued_before = now - timedelta(seconds=self.settings.lease_seconds)
        found = await self.store.stale(at=now, queued_before=queued_before)
        for job_id in found:
            self.follow(job_id)
        if found:
            log.info("training jobs to resume", jobs=found)
        return found

    def start(self) -> None:  # a database away for a while: the next round tries again
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
