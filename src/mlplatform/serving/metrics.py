"""Serving metrics (DESIGN §6): predictions, errors, latency, throughput, models, caches, loads."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlplatform.metrics import Metrics, Reading

LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class _Throughput:
    """`ml_predictions_throughput{model_id}`: predictions in the last 60 s, counted in one-second buckets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, list[int]] = {}  # model → [second, count] * 60, as a flat ring

    def add(self, model: str, count: int = 1) -> None:
        second = int(self.clock())
        ring = self.buckets.get(model)
        if ring is None:
            ring = self.buckets[model] = [0] * 120
        slot = (second % 60) * 2
        if ring[slot] != second:
            ring[slot], ring[slot + 1] = second, 0
        ring[slot + 1] += count

    def read(self) -> Reading:
        now = int(self.clock())
        return {
            (model,): sum(ring[i + 1] for i in range(0, 120, 2) if now - ring[i] < 60)
            for model, ring in self.buckets.items()
        }


class ServingMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.base = metrics
        self.registry = registry = metrics.registry
        self.predictions = Counter(
            "ml_predictions", "Predictions served, by model", ["model_id"], registry=registry
        )
        self.model_predictions = Counter(
            "ml_model_predictions", "Predictions served, by model version", ["model_id"], registry=registry
        )
        self.errors = Counter(
            "ml_predictions_errors", "Predictions that failed, by model", ["model_id"], registry=registry
        )
        self.latency = Histogram(
            "ml_predictions_latency",
            "Prediction latency in milliseconds, by model",
            ["model_id"],
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.cache_hits = Counter("ml_prediction_cache_hits", "Prediction cache hits", registry=registry)
        self.cache_misses = Counter(
            "ml_prediction_cache_misses", "Prediction cache misses", registry=registry
        )
        self.cache_skips = Counter(
            "ml_prediction_cache_skipped",
            "Prediction cache reads or writes skipped, by reason: unavailable, low_confidence, backlog",
            ["reason"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "ml_predictions_fallback",
            "Answers given by a fallback or the cache",
            ["model_id", "kind"],
            registry=registry,
        )
        self.model_loads = Histogram(
            "ml_model_load_seconds",
            "Time to fetch, load, compile and warm a model version",
            ["runtime"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.throughput = _Throughput()
        metrics.sampled(
            "ml_predictions_throughput",
            "Predictions in the last minute",
            self.throughput.read,
            labels=("model_id",),
            mode="livesum",
        )
        self._children: dict[str, tuple[Counter, Histogram]] = {}
        self._versions: dict[str, Counter] = {}
        self.experiments = ExperimentMetrics(registry)

    def observe(self, model: str, version: str, latency_ms: float, count: int = 1) -> None:
        children = self._children.get(model)
        if children is None:
            children = self._children[model] = (self.predictions.labels(model), self.latency.labels(model))
        children[0].inc(count)
        children[1].observe(latency_ms)
        by_version = self._versions.get(version)
        if by_version is None:
            by_version = self._versions[version] = self.model_predictions.labels(version)
        by_version.inc(count)
        self.throughput.add(model, count)


def register_models(
    metrics: Metrics, loaded: Callable[[], int], deployed: Callable[[], dict[str, float]]
) -> None:
    """ml_models_active (loaded here), ml_models_deployed (models with a servable version) and
    ml_model_age_days{model_id} (age of the version each bare name resolves to). With several workers, active
    is the most any worker has loaded, the others are the same in every worker."""
    metrics.sampled(
        "ml_models_active", "Model versions loaded in this instance", lambda: {(): loaded()}, mode="livemax"
    )
    metrics.sampled(
        "ml_models_deployed", "Models with a servable version", lambda: {(): len(deployed())}, mode="livemax"
    )
    metrics.sampled(
        "ml_model_age_days",
        "Age of the served version, days",
        lambda: {(model,): days for model, days in deployed().items()},
        labels=("model_id",),
        mode="livemax",
    )


class ExperimentMetrics:
    """`ml_experiment_requests_total{experiment,variant}`, errors and latency by variant, and shadow drops;
    with this instance's own counts for an experiment's results."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ml_experiment_requests",
            "Requests answered (or mirrored, for a shadow) by an experiment's variant",
            ["experiment", "variant"],
            registry=registry,
        )
        self.errors = Counter(
            "ml_experiment_errors",
            "Requests routed to an experiment's variant that failed",
            ["experiment", "variant"],
            registry=registry,
        )
        self.latency = Histogram(
            "ml_experiment_latency",
            "Prediction latency in milliseconds by experiment variant",
            ["experiment", "variant"],
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.shadow_dropped = Counter(
            "ml_experiment_shadow_dropped",
            "Shadow requests dropped because the shadow queue was full",
            ["experiment"],
            registry=registry,
        )
        self.counts: dict[tuple[str, str], list[int]] = {}  # (experiment, variant) → [requests, errors]
        # (experiment, shadow variant) → [rows compared, agreed, sum of |shadow − primary|, numeric rows]
        self.shadow: dict[tuple[str, str], list[float]] = {}
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, arm: tuple[str, str], latency_ms: float, count: int = 1) -> None:
        children = self._children.get(arm)
        if children is None:
            children = self._children[arm] = (self.requests.labels(*arm), self.latency.labels(*arm))
            self.counts[arm] = [0, 0]
        children[0].inc(count)
        children[1].observe(latency_ms)
        self.counts[arm][0] += count

    def failed(self, arm: tuple[str, str]) -> None:
        self.errors.labels(*arm).inc()
        self.counts.setdefault(arm, [0, 0])[1] += 1

    def compare(self, arm: tuple[str, str], primary: np.ndarray, shadow: np.ndarray) -> None:
        """How the shadow's answers compare with the answers given: equal labels or values, and for numbers
        the absolute difference."""
        if len(primary) != len(shadow):
            return
        found = self.shadow.setdefault(arm, [0.0, 0.0, 0.0, 0.0])
        found[0] += len(primary)
        if primary.dtype.kind in "fiu" and shadow.dtype.kind in "fiu":
            difference = np.abs(primary.astype(np.float64) - shadow.astype(np.float64))
            found[1] += float(np.count_nonzero(difference <= 1e-9 * np.maximum(1.0, np.abs(primary))))
            found[2] += float(difference.sum())
            found[3] += len(primary)
        else:
            found[1] += float(np.count_nonzero(primary.astype(str) == shadow.astype(str)))

    def totals(self) -> dict[tuple[str, str], tuple[int, int, int, int, float, int]]:
        """This process's running totals per (experiment, variant): requests, errors, shadow rows compared,
        agreed, sum of |shadow − answer| and numeric rows."""
        arms = set(self.counts) | set(self.shadow)
        totals = {}
        for arm in arms:
            requests, errors = self.counts.get(arm, (0, 0))
            compared, agreed, difference, numeric = self.shadow.get(arm, (0.0, 0.0, 0.0, 0.0))
            totals[arm] = (requests, errors, int(compared), int(agreed), difference, int(numeric))
        return totals
