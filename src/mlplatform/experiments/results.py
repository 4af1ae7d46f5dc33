"""An experiment's results: per-variant estimates with intervals, each variant against the control (the
first variant) with the always-valid test, and what to do next."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlplatform.experiments import stats
from mlplatform.experiments.schemas import (
    HIGHER_IS_BETTER,
    Comparison,
    Estimate,
    ExperimentRead,
    ExperimentResults,
    VariantRead,
    VariantResults,
)

DEFAULT_RELATIVE_EFFECT = 0.1  # without `min_effect`: a difference of 10 % of the control's value
TOP_VALUES = 20


@dataclass(frozen=True, slots=True)
class ArmInput:
    """What results need of one variant: counts, latencies, recent predictions, labelled pairs."""

    variant: VariantRead
    requests: int
    errors: int
    latencies: list[float]
    recent: list[Any]
    predicted: list[Any]
    actual: list[Any]
    shadow: tuple[int, int, float | None] | None = None  # rows compared, agreed, mean |difference|


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return float(value)


def _same(predicted: Any, actual: Any) -> bool:
    if predicted == actual:
        return True
    a, b = _number(predicted), _number(actual)
    return a is not None and b is not None and a == b


def observations(arm: ArmInput, metric: str, threshold: float | None = None) -> stats.Moments:
    """The metric's per-observation values as moments: 0/1 for rates, errors for mae and rmse (squared)."""
    if metric == "accuracy":
        hits = sum(_same(p, a) for p, a in zip(arm.predicted, arm.actual, strict=True))
        return stats.Proportion(hits, len(arm.predicted)).moments()
    if metric == "error_rate":
        return stats.Proportion(arm.errors, arm.requests + arm.errors).moments()
    if metric == "latency_p95":  # the share slower than the control's p95: 5 % when nothing differs
        slow = sum(latency > (threshold or 0.0) for latency in arm.latencies)
        return stats.Proportion(slow, len(arm.latencies)).moments()
    errors = []
    for p, a in zip(arm.predicted, arm.actual, strict=True):
        x, y = _number(p), _number(a)
        if x is not None and y is not None:
            errors.append(abs(x - y) if metric == "mae" else (x - y) ** 2)
    return stats.Moments.of(errors)


def _estimate(value: float, interval: stats.Interval) -> Estimate:
    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return Estimate(value=finite(value), low=finite(interval.low), high=finite(interval.high))


def variant_results(arm: ArmInput, metric: str, alpha: float) -> VariantResults:
    failed = stats.Proportion(arm.errors, arm.requests + arm.errors)
    latency = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value, interval = stats.quantile_interval(arm.latencies, q, alpha)
        latency[name] = _estimate(value, interval)
    metrics: dict[str, Estimate] = {}
    if arm.predicted:
        if metric in ("mae", "rmse"):
            for name in ("mae", "rmse"):
                m = observations(arm, name)
                if m.n:
                    interval = stats.mean_interval(m, alpha)
                    if name == "rmse":  # an interval of the mean squared error, then its square root
                        low = math.sqrt(max(interval.low, 0.0)) if math.isfinite(interval.low) else math.nan
                        interval = stats.Interval(low, math.sqrt(interval.high))
                        metrics[name] = _estimate(math.sqrt(m.mean), interval)
                    else:
                        metrics[name] = _estimate(m.mean, interval)
        else:
            hits = sum(_same(p, a) for p, a in zip(arm.predicted, arm.actual, strict=True))
            correct = stats.Proportion(hits, len(arm.predicted))
            metrics["accuracy"] = _estimate(correct.rate, stats.wilson_interval(correct, alpha))
    values = Counter(str(v) for v in arm.recent).most_common(TOP_VALUES)
    agreement, difference, compared = None, None, None
    if arm.shadow is not None:
        compared, agreed, difference = arm.shadow
        if compared:
            same = stats.Proportion(agreed, compared)
            agreement = _estimate(same.rate, stats.wilson_interval(same, alpha))
    return VariantResults(
        name=arm.variant.name,
        version=arm.variant.version,
        weight=arm.variant.weight,
        requests=arm.requests,
        errors=arm.errors,
        error_rate=_estimate(failed.rate, stats.wilson_interval(failed, alpha)),
        latency_ms=latency,
        predictions=dict(values),
        labelled=len(arm.predicted),
        metrics=metrics,
        agreement=agreement,
        compared=compared,
        mean_abs_difference=difference,
    )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def compare(
    control: ArmInput, arm: ArmInput, experiment: ExperimentRead, alpha: float
) -> tuple[Comparison, stats.SequentialTest, float, int | None]:
    """The variant against the control on the experiment's metric: the comparison, the test, the effect it
    was sized for and the samples per arm that would resolve it."""
    metric = experiment.metric
    threshold = None
    if metric == "latency_p95":
        threshold = stats.quantile_interval(control.latencies, 0.95)[0] if control.latencies else 0.0
    a, b = observations(control, metric, threshold), observations(arm, metric, threshold)
    baseline = abs(a.mean) if a.n and math.isfinite(a.mean) else 0.0
    effect = experiment.min_effect or max(DEFAULT_RELATIVE_EFFECT * baseline, 1e-9)
    if metric == "latency_p95":
        effect = experiment.min_effect or 0.05  # five points more of requests slower than the control's p95
    rate_metric = metric in ("accuracy", "error_rate", "latency_p95")
    usable = a.n >= 2 and b.n >= 2
    test = stats.sequential(a, b, tau=effect, alpha=alpha) if usable else None
    fixed = None
    if usable and rate_metric:
        successes = (round(a.mean * a.n), round(b.mean * b.n))
        fixed = stats.fixed_two_proportions(
            stats.Proportion(successes[0], a.n), stats.Proportion(successes[1], b.n), alpha
        )
    elif usable:
        fixed = stats.fixed_welch(a, b, alpha)
    if test is None:
        test = stats.SequentialTest(math.nan, 1.0, stats.Interval(-math.inf, math.inf), False)
    higher = HIGHER_IS_BETTER[metric]
    better = None
    if test.significant:
        better = test.difference > 0 if higher else test.difference < 0
    comparison = Comparison(
        variant=arm.variant.name,
        control=control.variant.name,
        metric=metric if metric != "rmse" else "squared error",
        samples=(a.n, b.n),
        difference=_finite(test.difference),
        interval=Estimate(
            value=_finite(test.difference), low=_finite(test.interval.low), high=_finite(test.interval.high)
        ),
        p_value=test.p_value if usable else None,
        fixed_horizon_p_value=fixed.p_value if fixed else None,
        test="mSPRT (normal mixture) on "
        + ("two proportions" if rate_metric else "the difference of means")
        + (f"; fixed horizon: {fixed.test}" if fixed else ""),
        significant=test.significant,
        better=better,
    )
    needed = stats.samples_to_resolve(a, b, effect=effect, tau=effect, alpha=alpha) if usable else None
    return comparison, test, effect, needed


def results(experiment: ExperimentRead, arms: Sequence[ArmInput]) -> ExperimentResults:
    """Every variant's estimates; each later variant against the first (Bonferroni: alpha / comparisons)."""
    alpha = experiment.alpha / max(len(arms) - 1, 1)
    variants = [variant_results(arm, experiment.metric, experiment.alpha) for arm in arms]
    control, comparisons, decisions, more = arms[0], [], [], []
    for arm in arms[1:]:
        comparison, test, effect, needed = compare(control, arm, experiment, alpha)
        comparisons.append(comparison)
        enough = min(comparison.samples) >= experiment.min_samples
        decisions.append((comparison, stats.recommend(test, effect=effect) if enough else "keep_running"))
        if needed is not None:
            more.append(
                max(needed - min(comparison.samples), experiment.min_samples - min(comparison.samples))
            )
    better = [c for c, d in decisions if d == "winner" and c.better]
    worse = [c for c, d in decisions if d == "winner" and not c.better]
    metric = experiment.metric
    if better:
        best = max(better, key=lambda c: (c.difference or 0) * (1 if HIGHER_IS_BETTER[metric] else -1))
        reason = (
            f"{best.variant} is better than {best.control} on {metric} (always-valid p = {best.p_value:.3g})"
        )
        return _answer(experiment, variants, comparisons, "winner", best.variant, None, reason)
    if decisions and len(worse) == len(decisions):
        reason = f"every variant is worse than {control.variant.name} on {metric}"
        return _answer(experiment, variants, comparisons, "winner", control.variant.name, None, reason)
    if decisions and all(d in ("no_detectable_difference", "winner") for _, d in decisions):
        reason = (
            f"no variant differs from {control.variant.name} by {metric} beyond the smallest effect sought"
        )
        return _answer(experiment, variants, comparisons, "no_detectable_difference", None, None, reason)
    samples = max([m for m in more if m > 0], default=None)
    short = min((min(c.samples) for c in comparisons), default=0)
    reason = (
        f"{short} of at least {experiment.min_samples} observations per variant"
        if short < experiment.min_samples
        else f"the difference on {metric} is not resolved yet"
    )
    return _answer(experiment, variants, comparisons, "keep_running", None, samples, reason)


def _answer(
    experiment: ExperimentRead,
    variants: list[VariantResults],
    comparisons: list[Comparison],
    recommendation: Any,
    winner: str | None,
    more: int | None,
    reason: str,
) -> ExperimentResults:
    return ExperimentResults(
        experiment=experiment.id,
        metric=experiment.metric,
        alpha=experiment.alpha,
        min_effect=experiment.min_effect,
        variants=variants,
        comparisons=comparisons,
        recommendation=recommendation,
        winner=winner,
        more_samples=more,
        reason=reason,
    )
