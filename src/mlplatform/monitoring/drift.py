"""Drift of a window of features against a reference profile: per-feature tests and a model verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mlplatform.monitoring import drift_tests as tests
from mlplatform.monitoring.drift_profile import (
    OTHER_LABEL,
    Column,
    FeatureKind,
    FeatureProfile,
    ReferenceProfile,
    cell_counts,
    summarise_categorical,
    summarise_numeric,
)

__all__ = ["DriftReport", "FeatureDrift", "FeatureKind", "Histogram", "ReferenceProfile", "compare"]

# Levels first seen in the current window beyond the most frequent MAX_NEW_LEVELS share one cell.
MAX_NEW_LEVELS = 100
NEW_OTHER_LABEL = "__new_other__"
Status = Literal["ok", "insufficient_data"]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Numeric: `edges` e0..e_last, bins (-inf, e0], (e0, e1], ..., (e_last, inf). Categorical: `labels`."""

    reference: list[int]
    current: list[int]
    edges: list[float] | None = None
    labels: list[str] | None = None


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    feature: str
    kind: FeatureKind
    status: Status
    reference_rows: int
    current_rows: int
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    missing_test: str | None = None
    reference_missing_rate: float | None = None
    current_missing_rate: float | None = None
    missing_p_value: float | None = None
    distance_name: str | None = None
    distance: float | None = None
    psi: float | None = None
    feature_p_value: float | None = None  # Bonferroni over this feature's tests
    drift: bool = False  # feature_p_value <= alpha: false alarms <= alpha for this feature
    adjusted_p_value: float | None = None  # Holm over every test of every feature
    drift_adjusted: bool = False  # adjusted_p_value <= alpha: family-wise error <= alpha
    histogram: Histogram | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DriftReport:
    alpha: float
    correction: str
    status: Status
    drift: bool  # some feature drifted with the family-wise error over all features and tests <= alpha
    tests: int
    drifted_features: list[str]
    features: list[FeatureDrift] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    profile: ReferenceProfile,
    current: Mapping[str, Column],
    *,
    alpha: float = 0.05,
    min_rows: int = 10,
    seed: int = 0,
) -> DriftReport:
    """Test every profiled feature of `current` for drift: its distribution and its missing rate.

    A feature whose window has fewer than `min_rows` rows (or that is absent) is "insufficient_data".
    Monte-Carlo p-values draw from a generator seeded by `seed` and the feature's position, so a report is
    reproducible.
    """
    results: list[FeatureDrift] = []
    for index, (name, feature) in enumerate(profile.features.items()):
        values = current.get(name)
        rows = 0 if values is None else len(values)
        if values is None or rows < min_rows or feature.rows == 0:
            note = "feature absent from the window" if values is None else f"fewer than {min_rows} rows"
            results.append(_insufficient(name, feature, rows, note if feature.rows else "empty reference"))
            continue
        rng = np.random.default_rng([seed, index])
        if feature.kind is FeatureKind.NUMERIC:
            results.append(_numeric(name, feature, values, rng))
        else:
            results.append(_categorical(name, feature, values, rng))
    return _decide(results, alpha)


def _insufficient(name: str, feature: FeatureProfile, rows: int, note: str) -> FeatureDrift:
    return FeatureDrift(name, feature.kind, "insufficient_data", feature.rows, rows, note=note)


def _missing(feature: FeatureProfile, missing: int, rows: int) -> dict[str, Any]:
    result = tests.missing_rate(feature.missing, feature.rows, missing, rows)
    return {
        "missing_test": result.test,
        "reference_missing_rate": feature.missing / feature.rows,
        "current_missing_rate": missing / rows,
        "missing_p_value": result.p_value,
    }


def _numeric(name: str, feature: FeatureProfile, values: Column, rng: np.random.Generator) -> FeatureDrift:
    summary = summarise_numeric(name, values)
    edges = np.asarray(feature.edges, dtype=np.float64)
    reference = np.asarray(feature.counts, dtype=np.int64)
    current = cell_counts(summary.present, edges)
    found: dict[str, Any] = {}
    if reference.sum() > 0 and current.sum() > 0:
        result = tests.anderson_darling(reference, current, rng)
        scale = feature.std if feature.std else 1.0
        quantiles = np.asarray(feature.quantiles, dtype=np.float64)
        # Bins (l, r] go to the PSI bin holding r: PSI edges are reference deciles, themselves among `edges`.
        groups = np.searchsorted(np.asarray(feature.psi_edges), np.append(edges, np.inf), side="left")
        found = {
            "test": result.test,
            "statistic": result.statistic,
            "p_value": result.p_value,
            "distance_name": "wasserstein_normalised",
            "distance": tests.wasserstein_from_quantiles(quantiles, summary.present) / scale,
            "psi": tests.psi(np.bincount(groups, weights=reference), np.bincount(groups, weights=current)),
        }
    histogram = Histogram(reference.tolist(), current.tolist(), edges=edges.tolist())
    return FeatureDrift(
        feature=name,
        kind=FeatureKind.NUMERIC,
        status="ok",
        reference_rows=feature.rows,
        current_rows=summary.rows,
        histogram=histogram,
        **found,
        **_missing(feature, summary.missing, summary.rows),
    )


def _category_table(
    feature: FeatureProfile, counts: dict[str, int]
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    levels = list(feature.levels or [])
    reference = list(feature.counts or [])
    position = {level: i for i, level in enumerate(levels)}
    current = [0] * len(levels)
    unseen: list[tuple[str, int]] = []
    for level, count in counts.items():
        if level in position:
            current[position[level]] += count
        else:
            unseen.append((level, count))
    if OTHER_LABEL in position:  # the reference's tail was pooled: an unseen level may be one of those
        current[position[OTHER_LABEL]] += sum(c for _, c in unseen)
    else:
        unseen.sort(key=lambda item: -item[1])
        for level, count in unseen[:MAX_NEW_LEVELS]:
            levels.append(level)
            reference.append(0)
            current.append(count)
        if len(unseen) > MAX_NEW_LEVELS:
            levels.append(NEW_OTHER_LABEL)
            reference.append(0)
            current.append(sum(c for _, c in unseen[MAX_NEW_LEVELS:]))
    return levels, np.asarray(reference, dtype=np.int64), np.asarray(current, dtype=np.int64)


def _categorical(
    name: str, feature: FeatureProfile, values: Column, rng: np.random.Generator
) -> FeatureDrift:
    summary = summarise_categorical(values)
    labels, reference, current = _category_table(feature, summary.counts)
    found: dict[str, Any] = {}
    if reference.sum() > 0 and current.sum() > 0:
        result = tests.chi_square(reference, current, rng)
        found = {
            "test": result.test,
            "statistic": result.statistic,
            "p_value": result.p_value,
            "distance_name": "jensen_shannon",
            "distance": tests.jensen_shannon(reference, current),
            "psi": tests.psi(reference, current),
        }
    return FeatureDrift(
        feature=name,
        kind=FeatureKind.CATEGORICAL,
        status="ok",
        reference_rows=feature.rows,
        current_rows=summary.rows,
        histogram=Histogram(reference.tolist(), current.tolist(), labels=labels),
        **found,
        **_missing(feature, summary.missing, summary.rows),
    )


def _decide(results: list[FeatureDrift], alpha: float) -> DriftReport:
    """Bonferroni within a feature (its verdict); Holm over all tests of all features (the model verdict)."""
    owners: list[int] = []
    p_values: list[float] = []
    for i, result in enumerate(results):
        for p in (result.p_value, result.missing_p_value):
            if p is not None:
                owners.append(i)
                p_values.append(p)
    adjusted = tests.holm(p_values)
    decided: list[FeatureDrift] = []
    for i, result in enumerate(results):
        own = [p for p, owner in zip(p_values, owners, strict=True) if owner == i]
        if not own:
            decided.append(result)
            continue
        feature_p = min(1.0, len(own) * min(own))
        feature_adjusted = min(a for a, owner in zip(adjusted, owners, strict=True) if owner == i)
        decided.append(
            replace(
                result,
                feature_p_value=feature_p,
                drift=feature_p <= alpha,
                adjusted_p_value=feature_adjusted,
                drift_adjusted=feature_adjusted <= alpha,
            )
        )
    drifted = [r.feature for r in decided if r.drift_adjusted]
    return DriftReport(
        alpha=alpha,
        correction="holm",
        status="ok" if p_values else "insufficient_data",
        drift=bool(drifted),
        tests=len(p_values),
        drifted_features=drifted,
        features=decided,
    )
