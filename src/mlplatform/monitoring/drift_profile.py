"""A version's reference sample summarised once for drift checks, and stored as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]

Column = npt.NDArray[Any] | Sequence[Any]

# Reference quantiles at i/NUMERIC_CELLS bound the test's cells: the whole reference is counted in them, so a
# shift that stays inside one cell (1 % of the reference) is invisible, and nothing else is lost.
NUMERIC_CELLS = 100
PSI_BINS = 10
# Quantiles kept for the Wasserstein distance only; the tests never read them.
QUANTILE_SKETCH = 1000
# Reference levels beyond the most frequent MAX_LEVELS are counted together as OTHER_LABEL.
MAX_LEVELS = 1000
OTHER_LABEL = "__other__"
FORMAT = 1


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True, slots=True)
class NumericSummary:
    present: npt.NDArray[np.float64]  # sorted finite values
    rows: int

    @property
    def missing(self) -> int:
        return self.rows - self.present.size


@dataclass(frozen=True, slots=True)
class CategoricalSummary:
    counts: dict[str, int]  # level (its string form) -> count
    rows: int

    @property
    def missing(self) -> int:
        return self.rows - sum(self.counts.values())


def summarise_numeric(name: str, values: Column) -> NumericSummary:
    """Finite values, sorted; None, NaN and +-inf count as missing."""
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature {name!r} is numeric but holds values that are not numbers") from exc
    return NumericSummary(present=np.sort(array[np.isfinite(array)]), rows=int(array.size))


def summarise_categorical(values: Column) -> CategoricalSummary:
    """Counts per level by its string form; None and NaN count as missing."""
    series = pd.Series(np.asarray(values, dtype=object).ravel(), dtype=object)
    present = series[~series.isna()].astype(str)
    counts = present.value_counts(sort=True)
    return CategoricalSummary(counts={str(k): int(v) for k, v in counts.items()}, rows=int(series.size))


def infer_kind(values: Column) -> FeatureKind:
    """Numbers (not booleans) are numeric, anything else categorical."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        return FeatureKind.NUMERIC
    if array.dtype.kind == "O":
        numbers = all(
            v is None or (isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool))
            for v in array.ravel()
        )
        if numbers and any(v is not None for v in array.ravel()):
            return FeatureKind.NUMERIC
    return FeatureKind.CATEGORICAL


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    """One feature of the reference. Numeric: cells (-inf, e0], (e0, e1], ..., (e_last, inf) over `edges`."""

    kind: FeatureKind
    rows: int
    missing: int
    edges: list[float] | None = None
    counts: list[int] | None = None
    psi_edges: list[float] | None = None
    quantiles: list[float] | None = None
    std: float | None = None
    levels: list[str] | None = None

    @staticmethod
    def numeric(summary: NumericSummary) -> FeatureProfile:
        values = summary.present
        if values.size == 0:
            return FeatureProfile(FeatureKind.NUMERIC, summary.rows, summary.missing, [], [0], [], [], 0.0)
        probs = np.arange(NUMERIC_CELLS + 1) / NUMERIC_CELLS
        grid = np.quantile(values, probs, method="inverted_cdf")
        # An edge just below the minimum gives values under the reference's range a cell of their own.
        edges = np.concatenate([[np.nextafter(grid[0], -np.inf)], np.unique(grid)])
        inner = np.quantile(values, probs[:: NUMERIC_CELLS // PSI_BINS][1:-1], method="inverted_cdf")
        k = min(QUANTILE_SKETCH, values.size)
        sketch = np.quantile(values, (np.arange(k) + 0.5) / k, method="inverted_cdf")
        return FeatureProfile(
            kind=FeatureKind.NUMERIC,
            rows=summary.rows,
            missing=summary.missing,
            edges=edges.tolist(),
            counts=cell_counts(values, edges).tolist(),
            psi_edges=np.unique(inner).tolist(),
            quantiles=sketch.tolist(),
            std=float(np.std(values)),
        )

    @staticmethod
    def categorical(summary: CategoricalSummary) -> FeatureProfile:
        items = list(summary.counts.items())  # most frequent first
        kept, rest = items[:MAX_LEVELS], items[MAX_LEVELS:]
        levels = [k for k, _ in kept] + ([OTHER_LABEL] if rest else [])
        counts = [v for _, v in kept] + ([sum(v for _, v in rest)] if rest else [])
        return FeatureProfile(
            FeatureKind.CATEGORICAL, summary.rows, summary.missing, levels=levels, counts=counts
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "kind": self.kind.value,
            "rows": self.rows,
            "missing": self.missing,
            "edges": self.edges,
            "counts": self.counts,
            "psi_edges": self.psi_edges,
            "quantiles": self.quantiles,
            "std": self.std,
            "levels": self.levels,
        }
        return {k: v for k, v in data.items() if v is not None}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> FeatureProfile:
        return FeatureProfile(
            kind=FeatureKind(data["kind"]),
            rows=int(data["rows"]),
            missing=int(data["missing"]),
            edges=data.get("edges"),
            counts=data.get("counts"),
            psi_edges=data.get("psi_edges"),
            quantiles=data.get("quantiles"),
            std=data.get("std"),
            levels=data.get("levels"),
        )


def cell_counts(
    sorted_values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Counts in (-inf, e0], (e0, e1], ..., (e_last, inf) of already sorted values."""
    upto = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate([[0], upto, [sorted_values.size]])).astype(np.int64)


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """What drift checks need from a reference sample, per feature; JSON-safe through to_dict / from_dict."""

    features: dict[str, FeatureProfile]

    @staticmethod
    def from_columns(
        columns: Mapping[str, Column], kinds: Mapping[str, str | FeatureKind] | None = None
    ) -> ReferenceProfile:
        kinds = kinds or {}
        features: dict[str, FeatureProfile] = {}
        for name, values in columns.items():
            kind = FeatureKind(kinds[name]) if name in kinds else infer_kind(values)
            if kind is FeatureKind.NUMERIC:
                features[name] = FeatureProfile.numeric(summarise_numeric(name, values))
            else:
                features[name] = FeatureProfile.categorical(summarise_categorical(values))
        return ReferenceProfile(features)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "features": {k: f.to_dict() for k, f in self.features.items()}}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ReferenceProfile:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown reference profile format {data.get('format')!r}")
        return ReferenceProfile({k: FeatureProfile.from_dict(v) for k, v in data["features"].items()})
