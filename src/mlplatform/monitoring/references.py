"""Reference samples for drift: columns from each source, checked against a version's signature, profiled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlplatform.errors import InvalidInput
from mlplatform.formats.base import FeatureType
from mlplatform.monitoring.drift import FeatureKind, ReferenceProfile
from mlplatform.monitoring.schemas import ProfileHistogram, ReferenceFeatureRead, ReferenceSource

# Rows profiled at most: a larger source is sampled uniformly. Profiling 100,000 rows takes about 0.25 s.
REFERENCE_ROWS = 100_000
# Fewer rows than this cannot be compared with anything (`compare`'s min_rows).
MIN_REFERENCE_ROWS = 10
SAMPLE_SEED = 0
Signature = Sequence[tuple[str, FeatureType]]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A reference sample before it is checked: the signature's columns, sampled, and where they came from."""

    source: ReferenceSource
    field: str  # the request field errors name
    columns: dict[str, npt.NDArray[Any]]
    source_rows: int
    dataset_id: str | None = None


def kinds(signature: Signature) -> dict[str, FeatureKind]:
    """String features are categorical; numbers and booleans (0/1) numeric, as the model sees them."""
    return {
        name: FeatureKind.CATEGORICAL if kind is FeatureType.STRING else FeatureKind.NUMERIC
        for name, kind in signature
    }


def from_records(rows: Sequence[Mapping[str, Any]], signature: Signature, field: str) -> dict[str, Any]:
    """Objects keyed by feature name to columns; unknown keys and features no row has are refused by name."""
    names = [name for name, _ in signature]
    seen: set[str] = set().union(*(row.keys() for row in rows))
    unknown = sorted(seen - set(names))
    missing = [name for name in names if name not in seen]
    if unknown or missing:
        parts = [f"unknown columns {', '.join(unknown)}"] if unknown else []
        parts += [f"missing columns {', '.join(missing)}"] if missing else []
        problem = f"{'; '.join(parts)} (the version's features: {', '.join(names[:50])})"
        detail = {"field": field, "problem": problem, "missing": missing, "unknown": unknown}
        raise InvalidInput(f"{field}: {problem}", details=[detail])
    return {name: np.asarray([row.get(name) for row in rows], dtype=object) for name in names}


def from_matrix(rows: Sequence[Sequence[Any]], signature: Signature) -> dict[str, Any]:
    """Rows in signature order to columns."""
    matrix = np.asarray(rows, dtype=object).reshape(len(rows), len(signature))
    return {name: matrix[:, i] for i, (name, _) in enumerate(signature)}


def profile(candidate: Candidate, signature: Signature) -> tuple[ReferenceProfile, int]:
    """The candidate's profile and its row count, or `InvalidInput` naming the problem (blocking)."""
    field = candidate.field
    columns = candidate.columns
    rows = len(next(iter(columns.values()))) if columns else 0
    if rows < MIN_REFERENCE_ROWS:
        problem = f"at least {MIN_REFERENCE_ROWS} rows are needed, got {rows}"
        raise InvalidInput(f"{field}: {problem}", details=[{"field": field, "problem": problem}])
    try:
        return ReferenceProfile.from_columns(columns, kinds(signature)), rows
    except ValueError as exc:  # a numeric feature holding text
        raise InvalidInput(f"{field}: {exc}", details=[{"field": field, "problem": str(exc)}]) from None


def summary(profile: Mapping[str, Any]) -> list[ReferenceFeatureRead]:
    """What the UI shows of a stored profile: per feature its kind, rows, missing rate and histogram."""
    features = []
    for name, feature in profile["features"].items():
        rows, missing = int(feature["rows"]), int(feature["missing"])
        features.append(
            ReferenceFeatureRead(
                name=name,
                kind=feature["kind"],
                rows=rows,
                missing=missing,
                missing_rate=missing / rows if rows else None,
                histogram=ProfileHistogram(
                    counts=feature.get("counts") or [],
                    edges=feature.get("edges"),
                    labels=feature.get("levels"),
                ),
            )
        )
    return features
