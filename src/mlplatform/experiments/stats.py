"""Per-variant statistics for experiments: intervals, fixed-horizon tests, an always-valid sequential test.

Rates (error rate, accuracy) are `Proportion`s; continuous metrics (absolute or squared error, latency) are
`Moments`. `fixed_*` are the textbook tests (pooled two-proportion z, Welch's t) and agree with scipy; they
are valid only when the sample size was fixed in advance and the result is looked at once. `sequential` is the
mixture sequential probability ratio test (mSPRT; Johari, Pekelis and Walsh, "Always Valid Inference", 2017)
with a normal mixture over the difference: its p-value and confidence sequence stay valid however often the
results are looked at, and whenever the experiment is stopped (Ville's inequality bounds the chance that the
likelihood ratio ever crosses 1/alpha under no difference by alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy import stats

Recommendation = Literal["winner", "no_detectable_difference", "keep_running"]


@dataclass(frozen=True, slots=True)
class Proportion:
    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else math.nan

    def moments(self) -> Moments:
        """The same data as 0/1 values (sample variance with n - 1)."""
        p, n = self.rate, self.trials
        variance = p * (1 - p) * n / (n - 1) if n > 1 else math.nan
        return Moments(n=n, mean=p, variance=variance)


@dataclass(frozen=True, slots=True)
class Moments:
    n: int
    mean: float
    variance: float  # the sample variance (n - 1 in the denominator)

    @classmethod
    def of(cls, values: list[float]) -> Moments:
        n = len(values)
        if n == 0:
            return cls(0, math.nan, math.nan)
        mean = math.fsum(values) / n
        variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
        return cls(n, mean, variance)


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class FixedTest:
    test: str
    statistic: float
    p_value: float
    difference: float  # treatment − control
    interval: Interval  # of the difference, at 1 − alpha


@dataclass(frozen=True, slots=True)
class SequentialTest:
    difference: float  # treatment − control
    p_value: float  # always valid: 1 / the mixture likelihood ratio, at most 1
    interval: Interval  # the confidence sequence at 1 − alpha: covers the true difference at every look
    significant: bool


def wilson_interval(p: Proportion, alpha: float = 0.05) -> Interval:
    """Wilson's score interval for one rate (what scipy's `binomtest(...).proportion_ci("wilson")` gives)."""
    if p.trials == 0:
        return Interval(0.0, 1.0)
    z = stats.norm.ppf(1 - alpha / 2)
    n, rate = p.trials, p.rate
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(m: Moments, alpha: float = 0.05) -> Interval:
    """Student's t interval for one mean."""
    if m.n < 2 or not math.isfinite(m.variance):
        return Interval(-math.inf, math.inf)
    half = stats.t.ppf(1 - alpha / 2, m.n - 1) * math.sqrt(m.variance / m.n)
    return Interval(m.mean - half, m.mean + half)


def fixed_two_proportions(control: Proportion, treatment: Proportion, alpha: float = 0.05) -> FixedTest:
    """The pooled two-proportion z-test (two-sided), with the unpooled Wald interval of the difference."""
    difference = treatment.rate - control.rate
    pooled = (control.successes + treatment.successes) / (control.trials + treatment.trials)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control.trials + 1 / treatment.trials))
    z = difference / se_pooled if se_pooled > 0 else 0.0
    p_value = float(2 * stats.norm.sf(abs(z)))
    se = math.sqrt(
        control.rate * (1 - control.rate) / control.trials
        + treatment.rate * (1 - treatment.rate) / treatment.trials
    )
    half = stats.norm.ppf(1 - alpha / 2) * se
    return FixedTest(
        "two-proportion z", z, p_value, difference, Interval(difference - half, difference + half)
    )


def fixed_welch(control: Moments, treatment: Moments, alpha: float = 0.05) -> FixedTest:
    """Welch's t-test (two-sided, unequal variances) with its interval of the difference of means."""
    a, b = control.variance / control.n, treatment.variance / treatment.n
    difference = treatment.mean - control.mean
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (control.n - 1) + b * b / (treatment.n - 1)) if se > 0 else 1.0
    t = difference / se if se > 0 else 0.0
    p_value = float(2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return FixedTest("Welch t", t, p_value, difference, Interval(difference - half, difference + half))


def sequential(control: Moments, treatment: Moments, *, tau: float, alpha: float = 0.05) -> SequentialTest:
    """The normal-mixture mSPRT on the difference of means, with mixing standard deviation `tau` (the size of
    difference worth finding; any tau > 0 keeps the test valid, a good one makes it decide sooner)."""
    difference = treatment.mean - control.mean
    v = control.variance / control.n + treatment.variance / treatment.n
    if not (v > 0 and math.isfinite(v)):
        return SequentialTest(difference, 1.0, Interval(-math.inf, math.inf), False)
    t2 = tau * tau
    log_ratio = 0.5 * math.log(v / (v + t2)) + t2 * difference * difference / (2 * v * (v + t2))
    p_value = min(1.0, math.exp(-log_ratio))
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))
    return SequentialTest(
        difference, p_value, Interval(difference - half, difference + half), p_value <= alpha
    )


def sequential_half_width(
    variance_control: float, variance_treatment: float, n: int, tau: float, alpha: float
) -> float:
    """The confidence sequence's half-width after `n` samples in each of two arms with these variances."""
    v = variance_control / n + variance_treatment / n
    t2 = tau * tau
    return math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))


def samples_to_resolve(
    control: Moments, treatment: Moments, *, effect: float, tau: float, alpha: float = 0.05, cap: int = 10**9
) -> int | None:
    """Samples per arm (in total) at which the confidence sequence gets narrower than `effect`, so that a true
    difference of that size would be declared: None when not even `cap` would do."""
    if not (effect > 0 and control.variance > 0 and treatment.variance > 0):
        return None
    low, high = max(control.n, treatment.n, 2), cap
    if sequential_half_width(control.variance, treatment.variance, high, tau, alpha) >= effect:
        return None
    while low < high:
        middle = (low + high) // 2
        if sequential_half_width(control.variance, treatment.variance, middle, tau, alpha) < effect:
            high = middle
        else:
            low = middle + 1
    return low


def recommend(test: SequentialTest, *, effect: float) -> Recommendation:
    """A winner when the test is significant; no detectable difference once the confidence sequence excludes
    every difference of at least `effect` either way; otherwise keep running."""
    if test.significant:
        return "winner"
    if -effect < test.interval.low and test.interval.high < effect:
        return "no_detectable_difference"
    return "keep_running"


def quantile_interval(values: list[float], q: float, alpha: float = 0.05) -> tuple[float, Interval]:
    """The `q` quantile of `values` and a distribution-free interval for it from order statistics (the ranks
    a binomial(n, q) count of values below the true quantile falls between)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan, Interval(math.nan, math.nan)
    estimate = ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]
    low = int(stats.binom.ppf(alpha / 2, n, q))
    high = int(stats.binom.ppf(1 - alpha / 2, n, q)) + 1
    return estimate, Interval(ordered[max(low - 1, 0)], ordered[min(high - 1, n - 1)])
