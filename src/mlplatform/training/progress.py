"""Progress and cancel between a training task on a Dask worker and the API process that follows it.

The worker sets the job's Dask `Variable` (throttled) and polls its Dask `Event`; the API process reads
the one and sets the other, so neither waits on the other.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

REPORT_EVERY = 0.25  # seconds between progress updates (each is a round trip to the scheduler)


class JobCancelled(Exception):
    pass


class Reporter:
    """Progress to the job's Variable, throttled; the cancel Event, looked at no more than every 0.2 s."""

    def __init__(self, progress_name: str, cancel_name: str) -> None:
        import distributed

        dd: Any = distributed  # untyped library
        self.variable = dd.Variable(progress_name)
        self.event = dd.Event(cancel_name)
        self.worker: str = dd.get_worker().address
        self.began = time.monotonic()
        self.reported = 0.0
        self.checked = 0.0
        self.cancelled = False

    def update(
        self, current: int, total: int, unit: str, metric_name: str | None = None, metric: float | None = None
    ) -> None:
        now = time.monotonic()
        if now - self.reported < REPORT_EVERY and current < total:
            return
        self.reported = now
        fraction = min(current / total, 1.0) if total else 1.0
        elapsed = now - self.began
        progress = {
            "fraction": fraction,
            "current": current,
            "total": total,
            "unit": unit,
            "metric_name": metric_name,
            "metric": float(metric) if metric is not None and np.isfinite(metric) else None,
            "eta_seconds": elapsed / fraction * (1 - fraction) if fraction > 0 else None,
        }
        self.variable.set({"worker": self.worker, "progress": progress})

    def cancel_asked(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.checked >= 0.2:
            self.checked = now
            self.cancelled = bool(self.event.is_set())
        return self.cancelled
