"""When a canary rolls back, moves to its next step, or is done: the guards, from the arms' data alone.

A guard fires when the canary is worse than the baseline by more than `max_degradation` *with confidence*:
the always-valid confidence sequence of the difference lies wholly beyond the tolerance (error rate, the label
metric), or the canary's p95 latency interval lies wholly above the baseline's times 1 + max_degradation. A
canary that fails every request is rolled back after a few dozen; one that is merely unlucky is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mlplatform.experiments import stats
from mlplatform.experiments.results import ArmInput, observations
from mlplatform.experiments.schemas import HIGHER_IS_BETTER, CanarySpec, ExperimentRead

GUARD_MIN_SAMPLES = 20  # observations of the canary before a rate guard may fire
LATENCY_MIN_SAMPLES = 50  # requests on each side before the p95 guard may fire
RATE_FLOOR = 0.01  # a baseline rate of 0 still tolerates max_degradation × 1 point
RATE_TAU = 0.05

Action = Literal["rollback", "step", "promote", "wait"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str


def smoothed(m: stats.Moments) -> stats.Moments:
    """A rate's moments with the variance of (x + 1) / (n + 2): never 0, so 0 of 30 against 30 of 30 still
    decides (a raw variance of 0 on both sides would say nothing)."""
    if m.n < 2:
        return m
    p = (m.mean * m.n + 1) / (m.n + 2)
    return stats.Moments(m.n, m.mean, p * (1 - p) * m.n / (m.n - 1))


def _worse_rate(
    baseline: ArmInput, canary: ArmInput, metric: str, spec: CanarySpec, alpha: float
) -> str | None:
    b, c = observations(baseline, metric), observations(canary, metric)
    if c.n < GUARD_MIN_SAMPLES or b.n < 2:
        return None
    rate = metric in ("error_rate", "accuracy")
    if rate:
        b, c = smoothed(b), smoothed(c)
    scale = max(abs(b.mean), RATE_FLOOR) if rate else abs(b.mean)
    tolerance = spec.max_degradation * scale
    if not tolerance > 0:
        return None
    # The mixture's scale: the test is valid for any, but one far below the effect it meets is slow to see
    # a canary failing outright, so it is at least 5 points for a rate (half a deviation otherwise).
    tau = max(tolerance, RATE_TAU if rate else 0.5 * math.sqrt(max(b.variance, 0.0)))
    test = stats.sequential(b, c, tau=tau, alpha=alpha)
    higher = HIGHER_IS_BETTER[metric]
    beyond = test.interval.high < -tolerance if higher else test.interval.low > tolerance
    if not beyond:
        return None
    shown = {"rmse": "squared error"}.get(metric, metric)
    return (
        f"the canary's {shown} is {c.mean:.4g} against the baseline's {b.mean:.4g}: worse by more than "
        f"{100 * spec.max_degradation:g} % (always-valid p = {test.p_value:.2g}, {c.n} observations)"
    )


def _slower(baseline: ArmInput, canary: ArmInput, spec: CanarySpec, alpha: float) -> str | None:
    if min(len(baseline.latencies), len(canary.latencies)) < LATENCY_MIN_SAMPLES:
        return None
    b95, b_interval = stats.quantile_interval(baseline.latencies, 0.95, alpha)
    c95, c_interval = stats.quantile_interval(canary.latencies, 0.95, alpha)
    limit = b_interval.high * (1 + spec.max_degradation)
    if not c_interval.low > limit:
        return None
    return (
        f"the canary's p95 latency is {c95:.3g} ms against the baseline's {b95:.3g} ms: slower by more "
        f"than {100 * spec.max_degradation:g} % (intervals {c_interval.low:.3g}.. vs ..{b_interval.high:.3g})"
    )


def guard(experiment: ExperimentRead, baseline: ArmInput, canary: ArmInput) -> str | None:
    """Why the canary must be rolled back now, or None."""
    spec = experiment.canary or CanarySpec()
    alpha = experiment.alpha
    metrics = ["error_rate"]
    if experiment.metric in ("accuracy", "mae", "rmse"):
        metrics.append(experiment.metric)
    for metric in metrics:
        if (reason := _worse_rate(baseline, canary, metric, spec, alpha)) is not None:
            return reason
    return _slower(baseline, canary, spec, alpha)


def next_move(experiment: ExperimentRead, step_samples: int, now: datetime) -> Decision:
    """With no guard firing: the next step once this one has its samples and time; after the last, promote."""
    spec = experiment.canary or CanarySpec()
    started = experiment.step_started_at or experiment.created_at
    elapsed = (now - started).total_seconds()
    share = spec.steps[experiment.step]
    if step_samples < spec.step_min_samples or elapsed < spec.step_min_seconds:
        needs = f"{step_samples}/{spec.step_min_samples} samples, {elapsed:.0f}/{spec.step_min_seconds:g} s"
        return Decision("wait", f"step {experiment.step} ({share:g} %): {needs}")
    if experiment.step + 1 >= len(spec.steps):
        return Decision("promote", f"every step passed; the canary served {share:g} % without degrading")
    following = spec.steps[experiment.step + 1]
    return Decision("step", f"step {experiment.step} ({share:g} %) passed: {following:g} % next")
