"""Scheduled checks: steps that measure each deployed model, then the alert rules; run once per interval
across instances (a lease row in the database), on demand through the API, never on the predict path.

Steps, in order: accuracy (sets `ml_model_accuracy`), drift (stores a report per model and window), latency,
the instance's counters. A new measurement is one more step in `app.build_checks`; its rule kind is one entry
of `alerts.rules.RULE_KINDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Counter

from mlplatform.clock import utcnow
from mlplatform.errors import Conflict
from mlplatform.ids import new_id
from mlplatform.monitoring.alerts.rules import CheckRun
from mlplatform.monitoring.alerts.schemas import CheckRunRead
from mlplatform.monitoring.alerts.service import AlertService
from mlplatform.monitoring.alerts.store import CheckLeaseStore
from mlplatform.monitoring.service import MonitoringService, window_bounds
from mlplatform.periodic import PeriodicTask
from mlplatform.registry.service import RegistryService
from mlplatform.settings import MonitoringSettings
from mlplatform.stores.predictions import PredictionLogStore

log = structlog.get_logger(__name__)
CheckStep = Callable[[CheckRun], Awaitable[None]]
LEASE_NAME = "monitoring-checks"
MAX_POLL_SECONDS = 10.0
RELEASE_TIMEOUT_SECONDS = 2.0
LATENCY_QUANTILE = 95


def deployed_models(registry: RegistryService) -> list[str]:
    """Models with a default (production alias, else newest ready) version, from the registry snapshot."""
    models = registry.watcher.snapshot.models
    return sorted(name for name, entry in models.items() if entry.default_version() is not None)


def counter_totals(counter: Counter) -> dict[str, float]:
    """A counter's totals in this process by its first label's value ('' when it has no labels)."""
    return {
        next(iter(sample.labels.values()), ""): sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


@dataclass(frozen=True)
class InstanceCounters:
    """This instance's serving counters. They are in-process (DESIGN §7: nothing shared on the predict
    path), so rules reading them see the requests of the instance that runs the check only."""

    predictions: Callable[[], dict[str, float]]  # model → predictions served
    errors: Callable[[], dict[str, float]]  # model → failed requests
    log_drops: Callable[[], float]  # prediction log records dropped


class AccuracyStep:
    """`ml_model_accuracy{model_id}` over `check-window` for every model, and accuracy for the rules."""

    def __init__(self, monitoring: MonitoringService, window: str) -> None:
        self.monitoring = monitoring
        self.window = window

    async def __call__(self, run: CheckRun) -> None:
        wanted = run.wanted("accuracy")
        failed: list[str] = []
        for model in run.models:
            # The check window last: each performance call without a version sets the gauge.
            windows = sorted({w for m, w in wanted if m == model} - {self.window}) + [self.window]
            try:
                for window in windows:
                    found = await self.monitoring.performance(model=model, window=window)
                    if found.classification is not None:
                        run.record("accuracy", model, window, found.classification.accuracy)
            except Exception as exc:  # one model's trouble must not hide the others'
                failed.append(f"{model}: {type(exc).__name__}: {exc}"[:200])
        if failed:
            raise RuntimeError("; ".join(failed))


class DriftStep:
    """A drift report for each model's default version over `check-window` and the windows drift rules
    read; versions without a reference sample are skipped. Records 1 for drift, 0 for none."""

    def __init__(self, monitoring: MonitoringService, window: str) -> None:
        self.monitoring = monitoring
        self.window = window

    async def __call__(self, run: CheckRun) -> None:
        wanted = run.wanted("drift")
        failed: list[str] = []
        for model in run.models:
            for window in sorted({w for m, w in wanted if m == model} | {self.window}):
                try:
                    report = await self.monitoring.check_drift(
                        model=model, window=window, trigger="scheduled"
                    )
                except Conflict:  # no reference sample: nothing to compare with
                    break
                except Exception as exc:  # one model's trouble must not hide the others'
                    failed.append(f"{model}: {type(exc).__name__}: {exc}"[:200])
                    break
                if report.status == "ok":
                    run.record("drift", model, window, 1.0 if report.drift else 0.0)
        if failed:
            raise RuntimeError("; ".join(failed))


class LatencyStep:
    """p95 of the logged request latencies per model and window: the log store is shared by instances."""

    def __init__(self, store: PredictionLogStore) -> None:
        self.store = store

    async def __call__(self, run: CheckRun) -> None:
        for model, window in sorted(run.wanted("latency_p95_ms"), key=str):
            if model is None:
                continue
            start, end = window_bounds(window, None, None, run.now)
            latencies = await self.store.latencies(model=model, start=start, end=end)
            if latencies:
                p95 = float(np.percentile(latencies, LATENCY_QUANTILE))
                run.record("latency_p95_ms", model, window, p95)


class CounterStep:
    """Error rate per model and log drops, from this instance's counters since its previous check."""

    def __init__(self, counters: InstanceCounters) -> None:
        self.counters = counters
        self.errors: dict[str, float] = {}
        self.predictions: dict[str, float] = {}
        self.drops = 0.0

    async def __call__(self, run: CheckRun) -> None:
        errors, predictions, drops = (
            self.counters.errors(),
            self.counters.predictions(),
            self.counters.log_drops(),
        )
        for model, window in run.wanted("error_rate"):
            if model is None:
                continue
            failed = errors.get(model, 0.0) - self.errors.get(model, 0.0)
            served = predictions.get(model, 0.0) - self.predictions.get(model, 0.0)
            run.record("error_rate", model, window, failed / (failed + served) if failed + served else 0.0)
        for model, window in run.wanted("log_drops"):
            run.record("log_drops", model, window, drops - self.drops)
        self.errors, self.predictions, self.drops = errors, predictions, drops


class MonitoringChecks:
    """One run: the models with a deployed version, the rules in force, each step in order (a failing step
    is logged and the others still run), then the alert rules on what the steps recorded. Runs of one
    instance never overlap."""

    def __init__(
        self,
        *,
        alerts: AlertService,
        models: Callable[[], list[str]],
        steps: list[tuple[str, CheckStep]],
        registry: CollectorRegistry,
    ) -> None:
        self.alerts = alerts
        self.models = models
        self.steps = list(steps)
        self.runs = 0
        self._lock = asyncio.Lock()
        self.outcomes = Counter(
            "ml_monitoring_checks",
            "Runs of the monitoring checks by this instance, by result: ok, or failed (a step or the rules)",
            ["result"],
            registry=registry,
        )

    def add_step(self, name: str, step: CheckStep) -> None:
        """A step run after those present, before the rules are evaluated (the drift step plugs in here)."""
        self.steps.append((name, step))

    async def run(self) -> CheckRunRead:
        async with self._lock:
            try:
                result = await self._run()
            except Exception:
                self.outcomes.labels("failed").inc()
                raise
            failed = any(outcome != "ok" for outcome in result.steps.values())
            self.outcomes.labels("failed" if failed else "ok").inc()
            return result

    async def _run(self) -> CheckRunRead:
        run = CheckRun(models=self.models(), rules=await self.alerts.rules(), now=utcnow())
        outcomes: dict[str, str] = {}
        for name, step in self.steps:
            try:
                await step(run)
                outcomes[name] = "ok"
            except Exception as exc:
                outcomes[name] = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("monitoring check step failed", step=name, error=outcomes[name])
        started, resolved = await self.alerts.evaluate(run)
        self.runs += 1
        firing = len(await self.alerts.store.open_alerts())
        return CheckRunRead(
            models=run.models, steps=outcomes, firing=firing, started=started, resolved=resolved
        )


class CheckScheduler:
    """Every `check-interval` seconds, on one instance: each instance polls the lease (a database row) and
    the one whose claim lands once the check is due runs it; the lease is held for `check-timeout`, after
    which a crashed holder is replaced. Failures are logged; the next interval tries again."""

    def __init__(self, *, checks: MonitoringChecks, leases: CheckLeaseStore, settings: MonitoringSettings):
        self.checks = checks
        self.leases = leases
        self.enabled = settings.enabled
        self.every = timedelta(seconds=settings.check_interval)
        self.timeout = float(settings.check_timeout)
        self.poll = min(settings.check_interval / 2, MAX_POLL_SECONDS)
        self.holder = f"{socket.gethostname()[:24]}:{os.getpid()}:{new_id()}"
        self._loop = PeriodicTask(
            "monitoring-checks", self.tick, lambda: self.poll, failure="monitoring check failed"
        )

    def start(self) -> None:
        if self.enabled:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def tick(self) -> CheckRunRead | None:
        """Run the checks if this instance wins the claim; None when they are not due or run elsewhere."""
        hold = timedelta(seconds=self.timeout + RELEASE_TIMEOUT_SECONDS)
        claimed = await self.leases.claim(
            LEASE_NAME, holder=self.holder, now=utcnow(), every=self.every, hold=hold
        )
        if not claimed:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await self.checks.run()
        finally:  # bounded; an unreleased lease expires after `hold`
            with contextlib.suppress(Exception):
                async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                    await self.leases.release(LEASE_NAME, holder=self.holder)
