"""Serving stats over time: each process saves what its own Prometheus counters counted per model and minute
(and hour): predictions, errors, latency-histogram cells, every few seconds and at stop; reads add up every
process's rows (and this process's latest, unsaved counts) into a series with latency percentiles."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Histogram

from mlplatform.clock import utcnow
from mlplatform.monitoring.service import UNITS, WINDOW, window_bounds
from mlplatform.periodic import PeriodicTask
from mlplatform.registry.service import RegistryService
from mlplatform.serving.metrics import LATENCY_BUCKETS_MS, ServingMetrics
from mlplatform.serving.schemas import (
    LatencyRead,
    ServingPointRead,
    ServingStatsRead,
    ServingTotalsRead,
)
from mlplatform.serving.stats_store import Counts, PeriodKey, ServingStatsStore
from mlplatform.settings import ServingStatsSettings
from mlplatform.stores.predictions import FeedbackHistoryEntry, LoggedPrediction, PredictionLogStore

log = structlog.get_logger(__name__)
CELL_BOUNDS: tuple[float, ...] = (*LATENCY_BUCKETS_MS, math.inf)  # each cell's upper bound, ms
DEFAULT_WINDOW = "1h"
MAX_POINTS = 240
STEP_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
PRUNE_EVERY = timedelta(minutes=10)
HOURLY_AFTER = timedelta(hours=3)
_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def histogram_quantile(q: float, cells: Sequence[int], bounds: Sequence[float] = CELL_BOUNDS) -> float | None:
    """The q-quantile (0 < q < 1) of observations counted in histogram cells (non-cumulative; cell i holds
    values up to `bounds[i]`, above the previous bound), as Prometheus's `histogram_quantile` estimates it:
    linear within the cell where the rank falls, the first cell starting at 0, and the highest finite bound
    when the rank falls in the +Inf cell. None when nothing was counted."""
    total = sum(cells)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(cells):
        if count > 0 and below + count >= rank:
            upper = bounds[i]
            if math.isinf(upper):
                return bounds[i - 1] if i > 0 else None
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return None


def latency(counts: Counts) -> LatencyRead:
    requests = counts.requests
    return LatencyRead(
        p50=histogram_quantile(0.5, counts.buckets),
        p95=histogram_quantile(0.95, counts.buckets),
        p99=histogram_quantile(0.99, counts.buckets),
        mean=counts.latency_sum_ms / requests if requests else None,
    )


def totals(counts: Counts) -> ServingTotalsRead:
    attempts = counts.requests + counts.errors
    return ServingTotalsRead(
        predictions=counts.predictions,
        requests=counts.requests,
        errors=counts.errors,
        error_rate=counts.errors / attempts if attempts else None,
        latency_ms=latency(counts),
    )


def minute_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def step_for(start: datetime, end: datetime) -> int:
    """Minutes per point: the smallest of `STEP_MINUTES` that keeps a window to `MAX_POINTS` points."""
    minutes = math.ceil((end - start) / _MINUTE)
    return next((s for s in STEP_MINUTES if minutes / s <= MAX_POINTS), STEP_MINUTES[-1])


def _aligned(at: datetime, step: int) -> datetime:
    """`at` rounded down to the step's grid (whole steps since the epoch, in UTC)."""
    minutes = (minute_of(at) - _EPOCH) // _MINUTE
    return _EPOCH + timedelta(minutes=minutes - minutes % step)


# Reading a labelled metric's children directly takes 0.3 ms for 100 models; `collect()` (what a scrape does)
# takes 10 ms for the histogram, which would stall the event loop, and the predictions on it, at every read.
# Both are prometheus_client's own values; the children are its internals, so `collect()` stays the fallback.


def _children(metric: Counter | Histogram) -> list[tuple[tuple[str, ...], Any]] | None:
    found = getattr(metric, "_metrics", None)
    return list(found.items()) if isinstance(found, dict) else None


def counter_values(counter: Counter) -> dict[str, float]:
    """A counter's value per model (its one label) in this process."""
    try:
        children = _children(counter)
        if children is not None:
            return {labels[0]: float(child._value.get()) for labels, child in children}
    except AttributeError:
        pass
    return {
        sample.labels["model_id"]: sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def histogram_values(histogram: Histogram) -> dict[str, tuple[float, list[int]]]:
    """The latency histogram per model in this process: (sum of latencies, count per cell)."""
    try:
        children = _children(histogram)
        if children is not None:
            return {
                labels[0]: (float(child._sum.get()), [int(cell.get()) for cell in child._buckets])
                for labels, child in children
            }
    except AttributeError:
        pass
    cumulative: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for family in histogram.collect():
        for sample in family.samples:
            model = sample.labels.get("model_id", "")
            if sample.name.endswith("_bucket"):
                cumulative.setdefault(model, {})[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                sums[model] = sample.value
    found = {}
    for model, by_bound in cumulative.items():
        running = [int(by_bound.get(bound, 0)) for bound in CELL_BOUNDS]
        cells = [b - a for a, b in zip([0, *running[:-1]], running, strict=True)]
        found[model] = (sums.get(model, 0.0), cells)
    return found


class Ledger:
    """This process's counts per (model, period) until the store holds them whole: what was counted, and what
    of it was saved."""

    def __init__(self, period_of: Callable[[datetime], datetime]) -> None:
        self.period_of = period_of
        self.pending: dict[PeriodKey, Counts] = {}
        self.saved: dict[PeriodKey, Counts] = {}

    def add(self, model: str, at: datetime, delta: Counts) -> None:
        key = (model, self.period_of(at))
        self.pending[key] = self.pending.get(key, Counts()) + delta

    def changed(self) -> dict[PeriodKey, Counts]:
        return {key: c for key, c in self.pending.items() if self.saved.get(key) != c}

    def forget(self, now: datetime, oldest: datetime) -> None:
        """Past periods once saved whole, and any past the retention (the database was away that long)."""
        current = self.period_of(now)
        for key in list(self.pending):
            if (key[1] < current and self.saved.get(key) == self.pending[key]) or key[1] < oldest:
                del self.pending[key]
                self.saved.pop(key, None)

    def unsaved(
        self, model: str | None, start: datetime, end: datetime
    ) -> Iterable[tuple[PeriodKey, Counts]]:
        """Counts per (model, period) in the window that the store does not hold yet."""
        for key, counts in self.pending.items():
            if (model is None or key[0] == model) and start <= key[1] < end:
                unsaved = counts - self.saved.get(key, Counts())
                if unsaved != Counts():
                    yield key, unsaved


@dataclass(frozen=True, slots=True)
class RecentPrediction:
    """A logged prediction with its current feedback (None: none given yet), its version's number and
    feature names (None and () when the version is no longer in the registry)."""

    prediction: LoggedPrediction
    feedback: FeedbackHistoryEntry | None
    version: int | None
    features: tuple[str, ...]


class ServingStatsService:
    """This process's serving counters saved per minute (`flush`, run by `start`'s loop on every instance),
    and the cluster's series read back (`series`, `overview`), with a model's recent predictions."""

    def __init__(
        self,
        *,
        store: ServingStatsStore,
        metrics: ServingMetrics,
        logs: PredictionLogStore,
        registry: RegistryService,
        settings: ServingStatsSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.logs = logs
        self.registry = registry
        self.settings = settings
        self.clock = clock
        match = WINDOW.match(settings.retention)
        assert match is not None  # checked by the settings
        self.retention = int(match["amount"]) * UNITS[match["unit"]]
        # New at every start: a restarted process adds rows, never overwrites an earlier process's minutes.
        self.instance = f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"
        self._last: dict[str, Counts] = {}  # the counters' totals per model at the last reading
        self._minutes = Ledger(minute_of)
        self._hours = Ledger(hour_of)
        self._pruned_at: datetime | None = None
        # A read adds this process's unsaved counts to the store's rows: a save in between would count twice.
        self._saving = asyncio.Lock()
        self._loop = PeriodicTask(
            "serving-stats",
            self._round,
            lambda: self.settings.flush_seconds,
            failure="serving stats not saved",  # the database may be away a while: the counts wait in memory
            wait_first=True,
        )

    # --- this process's counts -----------------------------------------------------------------------------

    def _counter_totals(self) -> dict[str, Counts]:
        predictions = counter_values(self.metrics.predictions)
        errors = counter_values(self.metrics.errors)
        latencies = histogram_values(self.metrics.latency)
        found = {}
        for model in predictions.keys() | errors.keys() | latencies.keys():
            latency_sum, cells = latencies.get(model, (0.0, [0] * len(CELL_BOUNDS)))
            found[model] = Counts(
                int(predictions.get(model, 0)), int(errors.get(model, 0)), latency_sum, tuple(cells)
            )
        return found

    def collect(self) -> None:
        """Add what the counters counted since the last reading to the current minute and hour (no I/O)."""
        now = self.clock()
        for model, total in self._counter_totals().items():
            delta = total - self._last.get(model, Counts())
            if delta == Counts():
                continue
            self._last[model] = total
            self._minutes.add(model, now, delta)
            self._hours.add(model, now, delta)

    async def flush(self) -> None:
        """Save the minutes and hours that changed since the last save; forget past ones once saved."""
        async with self._saving:
            self.collect()
            now = self.clock()
            minutes, hours = self._minutes.changed(), self._hours.changed()
            await self.store.save(self.instance, minutes, hours, at=now)
            self._minutes.saved.update(minutes)
            self._hours.saved.update(hours)
        for ledger in (self._minutes, self._hours):
            ledger.forget(now, now - self.retention)

    async def prune(self) -> int:
        """Delete the minutes and hours past `ml.serving.stats.retention` (every instance's: any may)."""
        self._pruned_at = self.clock()
        return await self.store.prune(self._pruned_at - self.retention)

    async def _periods(
        self, model: str, start: datetime, end: datetime, *, hourly: bool
    ) -> dict[datetime, Counts]:
        """The store's periods with this process's unsaved counts added (call with `_saving` held)."""
        found = await self.store.periods(model, start, end, hourly=hourly)
        ledger = self._hours if hourly else self._minutes
        for (_, period), unsaved in ledger.unsaved(model, start, end):
            found[period] = found.get(period, Counts()) + unsaved
        return found

    async def _by_model(self, start: datetime, end: datetime, *, hourly: bool) -> dict[str, Counts]:
        found = await self.store.by_model(start, end, hourly=hourly)
        ledger = self._hours if hourly else self._minutes
        for (model, _), unsaved in ledger.unsaved(None, start, end):
            found[model] = found.get(model, Counts()) + unsaved
        return found

    # --- the loop ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    async def _round(self) -> None:
        await self.flush()
        due = self._pruned_at is None or self.clock() - self._pruned_at >= PRUNE_EVERY
        if due and (pruned := await self.prune()):
            log.info("serving stats pruned", rows=pruned)

    async def stop(self) -> None:
        if self._loop.running:
            await self._loop.stop()
            try:  # what this process counted since the last round
                await self.flush()
            except Exception as exc:
                log.warning("serving stats not saved", error=f"{type(exc).__name__}: {exc}"[:300])

    # --- reading -----------------------------------------------------------------------------------------

    async def series(
        self,
        *,
        model: str,
        window: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> ServingStatsRead:
        """The model's counts per step over the window (default the last hour), every instance's added up."""
        await self.registry.get_model(model)  # NotFound for an unknown model
        start, end = window_bounds(window or DEFAULT_WINDOW, start, end, self.clock())
        step = step_for(start, end)
        start = _aligned(start, step)
        hourly = step % 60 == 0  # steps of whole hours, aligned to hours: the hour rows add up to them
        if hourly and end < self.clock():  # a past window's last hour row holds the whole hour: end with it
            end = min(hour_of(end - timedelta(microseconds=1)) + timedelta(hours=1), self.clock())
        async with self._saving:
            self.collect()
            periods = await self._periods(model, start, end, hourly=hourly)
            instances = await self.store.instances(model, start, end, hourly=hourly)
            ledger = self._hours if hourly else self._minutes
            if any(ledger.unsaved(model, start, end)):
                instances.add(self.instance)
        width = timedelta(minutes=step)
        steps = math.ceil((end - start) / width)
        summed = [Counts() for _ in range(steps)]
        for period, counts in periods.items():
            index = (period - start) // width
            if 0 <= index < steps:
                summed[index] += counts
        points = [
            ServingPointRead(
                at=start + i * width,
                predictions=c.predictions,
                requests=c.requests,
                errors=c.errors,
                p50=histogram_quantile(0.5, c.buckets),
                p95=histogram_quantile(0.95, c.buckets),
                p99=histogram_quantile(0.99, c.buckets),
            )
            for i, c in enumerate(summed)
        ]
        return ServingStatsRead(
            model=model,
            start=start,
            end=end,
            step_seconds=step * 60,
            instances=len(instances),
            totals=totals(sum(summed, Counts())),
            points=points,
        )

    async def overview(
        self, *, models: Sequence[str], window: str | None = None
    ) -> tuple[datetime, datetime, dict[str, ServingTotalsRead]]:
        """Each of these models' totals over the window (default the last hour): (start, end, by model); a
        window of more than 3 hours starts at its first hour."""
        start, end = window_bounds(window or DEFAULT_WINDOW, None, None, self.clock())
        # Past a few hours the hour rows answer (a row an hour, not sixty), from the window's first hour.
        hourly = end - start > HOURLY_AFTER
        start = hour_of(start) if hourly else minute_of(start)
        async with self._saving:
            self.collect()
            found = await self._by_model(start, end, hourly=hourly)
        return start, end, {m: totals(found[m]) for m in models if m in found}

    async def recent(self, *, model: str, limit: int = 20) -> list[RecentPrediction]:
        """The model's newest logged predictions, each with its current feedback."""
        found = await self.logs.query(model=model, limit=limit)
        feedback = await self.logs.current_feedback([p.prediction_id for p in found])
        entry = self.registry.watcher.snapshot.models.get(model)
        versions = {v.id: v for v in entry.versions.values()} if entry else {}
        recent = []
        for p in found:
            version = versions.get(p.version)
            names = tuple(f.name for f in version.description.features) if version else ()
            number = version.version if version else None
            recent.append(RecentPrediction(p, feedback.get(p.prediction_id), number, names))
        return recent
