"""Progress and cancel between a training task on a Dask worker and the API process that follows it.

The worker sets the job's Dask `Variable` (throttled) and polls its Dask `Event`; the API process reads
the one and sets the other, so neither waits on the other.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

REPORT_EVERY = 0.25  # seconds between progress updates (each is a round trip to the scheduler)


class JobCancelled(Exception):
    pass


class Reporter:
    """Progress to the job's Variable, throttled; the cancel Event, looked at no more than every 0.2 s."""

    def __init__(self, progress_name: str, cancel_name: str, owner: tuple[str, str] | None = None) -> None:
        import distributed

        dd: Any = distributed  # untyped library
        self.variable = dd.Variable(progress_name)
        self.event = dd.Event(cancel_name)
        # The job's owner Variable names the run that may go on: any other run of the job (one an earlier,
        # stopped instance left training) sees it has been superseded and stops, writing nothing more.
        self.owner = None if owner is None else (dd.Variable(owner[0]), owner[1])
        self.worker: str = dd.get_worker().address
        self.began = time.monotonic()
        self.reported = 0.0
        self.checked = 0.0
        self.cancelled = False
        # Dask re-runs a task whose worker died: a new token tells the API process that a new run began.
        self.run = uuid.uuid4().hex
        self.resumed_from: int | None = None
        self.first = 0  # rounds done before this run (its ETA counts only its own rounds)

    @classmethod
    def for_spec(cls, spec: dict[str, Any]) -> Reporter:
        owner = (spec["owner_name"], spec["owner_token"]) if spec.get("owner_name") else None
        return cls(spec["progress_name"], spec["cancel_name"], owner)

    def _stop_asked(self) -> bool:
        if self.event.is_set():
            return True
        if self.owner is None:
            return False
        variable, token = self.owner
        try:
            return bool(variable.get(timeout=2) != token)
        except Exception:  # the scheduler is slow or the variable is gone: do not stop on a guess
            return False

    def resume(self, current: int) -> None:
        """This run continues a checkpoint holding `current` rounds."""
        self.resumed_from = self.first = current
        self.began = time.monotonic()

    def update(
        self, current: int, total: int, unit: str, metric_name: str | None = None, metric: float | None = None
    ) -> None:
        now = time.monotonic()
        if now - self.reported < REPORT_EVERY and current < total:
            return
        self.reported = now
        fraction = min(current / total, 1.0) if total else 1.0
        elapsed = now - self.began
        done = (current - self.first) / total if total else 0.0
        progress = {
            "fraction": fraction,
            "current": current,
            "total": total,
            "unit": unit,
            "metric_name": metric_name,
            "metric": float(metric) if metric is not None and np.isfinite(metric) else None,
            "eta_seconds": elapsed / done * (1 - fraction) if done > 0 else None,
        }
        self.variable.set(
            {"worker": self.worker, "run": self.run, "resumed_from": self.resumed_from, "progress": progress}
        )

    def cancel_now(self) -> bool:
        """The cancel Event looked at now (a round trip to the scheduler): before starting or writing what a
        cancelled job must not leave behind (a search's next trial, a checkpoint)."""
        if not self.cancelled:
            self.checked = time.monotonic()
            self.cancelled = self._stop_asked()
        return self.cancelled

    def cancel_asked(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.checked >= 0.2:
            self.checked = now
            self.cancelled = self._stop_asked()
        return self.cancelled
