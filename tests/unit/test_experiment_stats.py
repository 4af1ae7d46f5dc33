"""Experiment statistics against scipy on the same data; the sequential test's error rates by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlplatform.experiments.stats import (
    Moments,
    Proportion,
    fixed_two_proportions,
    fixed_welch,
    mean_interval,
    recommend,
    samples_to_resolve,
    sequential,
    sequential_half_width,
    wilson_interval,
)

ALPHA = 0.05


@pytest.mark.parametrize(("a", "n", "b", "m"), [(30, 1000, 45, 1000), (5, 80, 1, 120), (400, 500, 380, 520)])
def test_two_proportions_agree_with_scipy_chi_square(a: int, n: int, b: int, m: int) -> None:
    test = fixed_two_proportions(Proportion(a, n), Proportion(b, m))
    chi2, p, _, _ = stats.chi2_contingency([[a, n - a], [b, m - b]], correction=False)
    assert test.p_value == pytest.approx(p, rel=1e-9)
    assert test.statistic**2 == pytest.approx(chi2, rel=1e-9)
    assert test.difference == pytest.approx(b / m - a / n)


def test_welch_agrees_with_scipy_on_raw_values() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(1.0, 2.0, 300), rng.normal(1.4, 0.5, 120)
    test = fixed_welch(Moments.of(x.tolist()), Moments.of(y.tolist()))
    expected = stats.ttest_ind(y, x, equal_var=False)
    assert test.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert test.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    ci = expected.confidence_interval(0.95)
    assert (test.interval.low, test.interval.high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_one_arm_intervals_agree_with_scipy() -> None:
    wilson = wilson_interval(Proportion(17, 230))
    expected = stats.binomtest(17, 230).proportion_ci(0.95, method="wilson")
    assert (wilson.low, wilson.high) == pytest.approx((expected.low, expected.high), rel=1e-9)
    values = np.random.default_rng(1).exponential(3.0, 50)
    t = mean_interval(Moments.of(values.tolist()))
    low, high = stats.t.interval(0.95, 49, loc=values.mean(), scale=stats.sem(values))
    assert (t.low, t.high) == pytest.approx((low, high), rel=1e-9)
    assert Proportion(3, 10).moments().variance == pytest.approx(np.var([1] * 3 + [0] * 7, ddof=1))


def looks(
    rate_a: float, rate_b: float, runs: int, batches: int, batch: int, seed: int
) -> tuple[float, float]:
    """Simulated experiments looked at after every batch: how often the sequential test, and a fixed z-test
    misused the same way, ever declared a difference."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(batch, rate_a, size=(runs, batches)).cumsum(axis=1)
    b = rng.binomial(batch, rate_b, size=(runs, batches)).cumsum(axis=1)
    n = batch * np.arange(1, batches + 1)
    pooled = (a + b) / (2 * n)
    z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)  # the pooled z-test at every look, at once
    naive = (2 * stats.norm.sf(np.abs(z)) <= ALPHA).any(axis=1).mean()
    hits = 0
    for run in range(runs):
        for look in range(batches):
            control = Proportion(int(a[run, look]), int(n[look])).moments()
            treatment = Proportion(int(b[run, look]), int(n[look])).moments()
            if sequential(control, treatment, tau=0.02).significant:
                hits += 1
                break
    return hits / runs, float(naive)


def test_looking_after_every_batch_keeps_the_sequential_false_alarm_rate_under_alpha() -> None:
    runs = 1000
    sequential_rate, naive_rate = looks(0.1, 0.1, runs=runs, batches=50, batch=100, seed=11)
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)  # alpha plus three binomial standard errors
    assert sequential_rate <= bound, sequential_rate
    assert naive_rate > 2 * ALPHA, naive_rate  # what peeking does to a fixed-horizon test: why we do not


def test_the_sequential_test_finds_a_real_difference() -> None:
    power, _ = looks(0.10, 0.13, runs=200, batches=50, batch=100, seed=12)
    assert power >= 0.8, power


def test_the_confidence_sequence_covers_the_true_difference_at_every_look() -> None:
    rng = np.random.default_rng(5)
    runs, missed, sizes = 500, 0, np.arange(50, 2001, 50)

    def moments(values: np.ndarray) -> list[Moments]:  # the running mean and variance at each look
        total, squares = np.cumsum(values)[sizes - 1], np.cumsum(values**2)[sizes - 1]
        means = total / sizes
        variances = (squares - sizes * means**2) / (sizes - 1)
        return [Moments(int(n), float(m), float(v)) for n, m, v in zip(sizes, means, variances, strict=True)]

    for _ in range(runs):
        xs, ys = moments(rng.normal(0.0, 1.0, 2000)), moments(rng.normal(0.3, 2.0, 2000))
        for x, y in zip(xs, ys, strict=True):
            interval = sequential(x, y, tau=0.2).interval
            if not interval.low <= 0.3 <= interval.high:
                missed += 1
                break
    assert missed / runs <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs), missed / runs


def test_samples_to_resolve_is_the_first_sample_size_narrow_enough() -> None:
    control, treatment = Moments(200, 0.1, 0.09), Moments(200, 0.12, 0.1056)
    needed = samples_to_resolve(control, treatment, effect=0.01, tau=0.02)
    assert needed is not None and needed > 200
    assert sequential_half_width(0.09, 0.1056, needed, 0.02, ALPHA) < 0.01
    assert sequential_half_width(0.09, 0.1056, needed - 1, 0.02, ALPHA) >= 0.01
    assert samples_to_resolve(control, treatment, effect=1e-9, tau=0.02, cap=10**6) is None


def test_recommendations() -> None:
    big = sequential(Moments(50_000, 0.10, 0.09), Moments(50_000, 0.12, 0.1056), tau=0.02)
    assert big.significant and recommend(big, effect=0.01) == "winner"
    same = sequential(Moments(500_000, 0.10, 0.09), Moments(500_000, 0.1001, 0.09), tau=0.02)
    assert not same.significant and recommend(same, effect=0.01) == "no_detectable_difference"
    early = sequential(Moments(100, 0.10, 0.09), Moments(100, 0.12, 0.1056), tau=0.02)
    assert recommend(early, effect=0.01) == "keep_running"
