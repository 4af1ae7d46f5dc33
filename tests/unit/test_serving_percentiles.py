"""Latency percentiles from the latency histogram's cells (Prometheus's histogram_quantile) against numpy's
percentiles of the same latencies: within the resolution of the cells."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlplatform.metrics import Metrics
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.stats import CELL_BOUNDS, histogram_quantile, histogram_values, step_for


def cells_of(latencies: np.ndarray) -> list[int]:
    """The cells as the server counts them: observed into the real `ml_predictions_latency` histogram."""
    metrics = ServingMetrics(Metrics(application="t", environment="test"))
    for value in latencies:
        metrics.observe("m", "m-v1-20261204000000", float(value))
    _, cells = histogram_values(metrics.latency)["m"]
    return cells


def cell_bounds_of(value: float) -> tuple[float, float]:
    upper = next(i for i, bound in enumerate(CELL_BOUNDS) if value <= bound)
    return (CELL_BOUNDS[upper - 1] if upper else 0.0), CELL_BOUNDS[upper]


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormal(mean=1.5, sigma=1.0, size=20_000),  # a long tail, ms
        lambda rng: rng.uniform(0.05, 40.0, size=5_000),
        lambda rng: np.concatenate([rng.normal(0.8, 0.1, 9_000), rng.normal(300, 50, 1_000)]).clip(0.01),
    ],
    ids=["lognormal", "uniform", "bimodal"],
)
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_percentiles_fall_in_the_cell_of_numpys_and_interpolate_within_it(draw: object, q: float) -> None:
    latencies = draw(np.random.default_rng(7))  # type: ignore[operator]
    cells = cells_of(latencies)
    assert sum(cells) == len(latencies)
    estimate = histogram_quantile(q, cells)
    exact = float(np.percentile(latencies, q * 100))
    lower, upper = cell_bounds_of(exact)
    assert estimate is not None and lower <= estimate <= upper, (q, estimate, exact, lower, upper)


def test_values_spread_evenly_in_a_cell_are_interpolated_close_to_numpy() -> None:
    latencies = np.random.default_rng(3).uniform(10.0, 25.0, size=10_000)  # one cell: (10, 25]
    cells = cells_of(latencies)
    for q in (0.5, 0.95, 0.99):
        estimate = histogram_quantile(q, cells)
        assert estimate is not None
        assert math.isclose(estimate, np.percentile(latencies, q * 100), abs_tol=0.3)


def test_edge_cases_follow_prometheus() -> None:
    empty = [0] * len(CELL_BOUNDS)
    assert histogram_quantile(0.5, empty) is None
    slow = [*empty[:-1], 10]  # every request slower than the last finite bound: that bound
    assert histogram_quantile(0.99, slow) == CELL_BOUNDS[-2]
    first = [4, *empty[1:]]  # the first cell starts at 0
    assert histogram_quantile(0.5, first) == pytest.approx(CELL_BOUNDS[0] / 2)


def test_steps_keep_a_window_to_at_most_240_points() -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 12, 4, tzinfo=UTC)
    assert step_for(start, start + timedelta(hours=1)) == 1
    assert step_for(start, start + timedelta(hours=4)) == 1
    assert step_for(start, start + timedelta(hours=24)) == 10
    assert step_for(start, start + timedelta(days=7)) == 60
    assert step_for(start, start + timedelta(days=366)) == 1440


def test_the_counters_read_directly_match_what_a_scrape_collects(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlplatform.serving import stats

    metrics = ServingMetrics(Metrics(application="t", environment="test"))
    for i in range(30):
        metrics.observe(f"m{i % 3}", "v", 0.07 * i, count=2)
    metrics.errors.labels("m1").inc()
    metrics.errors.labels("gone").inc()
    read = (
        stats.histogram_values(metrics.latency),
        stats.counter_values(metrics.predictions),
        stats.counter_values(metrics.errors),
    )
    monkeypatch.setattr(stats, "_children", lambda metric: None)  # as a prometheus_client without them
    collected = (
        stats.histogram_values(metrics.latency),
        stats.counter_values(metrics.predictions),
        stats.counter_values(metrics.errors),
    )
    assert read == collected
    assert read[1] == {"m0": 20.0, "m1": 20.0, "m2": 20.0} and read[2] == {"m1": 1.0, "gone": 1.0}
