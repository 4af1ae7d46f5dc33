"""Request features (by name or in signature order) to the model's input matrix, or exactly why not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from mlplatform.errors import InvalidInput
from mlplatform.formats.base import Feature, FeatureType

_NUMBER = (int, float)
_NUMBER_TYPES = frozenset(_NUMBER)


class Signature:
    """A version's input signature, prepared once per loaded model so each request only indexes."""

    def __init__(self, features: Sequence[Feature], model: str, *, missing_strings: bool = False) -> None:
        """`missing_strings`: a string feature may be null (the model treats it as a missing category)."""
        self.features = tuple(features)
        self.missing_strings = missing_strings
        self.names = tuple(f.name for f in self.features)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.numeric = all(f.type is not FeatureType.STRING for f in self.features)
        self.model = model

    @property
    def width(self) -> int:
        return len(self.features)

    def row(self, values: Any, where: str) -> list[Any]:
        """One instance as a list in signature order; raises `InvalidInput` naming every bad feature."""
        if isinstance(values, dict):
            if len(values) == self.width:
                try:
                    row = [values[name] for name in self.names]
                except KeyError:
                    pass
                else:
                    if self._fast_ok(row):
                        return row
            return self._checked(
                [values.get(n, _MISSING) for n in self.names], where, extra=set(values) - set(self.names)
            )
        if isinstance(values, list):
            if len(values) != self.width:
                raise InvalidInput(
                    f"{where}: {self.model} expects {self.width} features ({', '.join(self.names[:20])}"
                    f"{', ...' if self.width > 20 else ''}), got {len(values)}",
                    details=[{"field": where, "problem": f"expected {self.width} values, got {len(values)}"}],
                )
            return values if self._fast_ok(values) else self._checked(values, where, extra=set())
        raise InvalidInput(
            f"{where}: expected an object keyed by feature name or an array in signature order",
            details=[{"field": where, "problem": "must be an object or an array"}],
        )

    def batch(self, instances: list[Any], where: str) -> np.ndarray:
        """Many instances as the model's input matrix. Arrays of plain numbers take a few vectorised checks
        instead of one per value; anything else is checked (and named) row by row."""
        width = self.width
        if (
            self.numeric
            and instances
            and all(type(item) is list and len(item) == width for item in instances)
            # only ints and floats: numpy would quietly turn "1.5" and True into numbers
            and set(map(type, chain.from_iterable(instances))) <= _NUMBER_TYPES
        ):
            matrix = np.asarray(instances, dtype=np.float64)
            if np.isfinite(matrix).all():
                return matrix
        return self.matrix([self.row(item, f"{where}[{i}]") for i, item in enumerate(instances)])

    def matrix(self, rows: list[list[Any]]) -> np.ndarray:
        if self.numeric:
            return np.asarray(rows, dtype=np.float64)
        return np.asarray(rows, dtype=object)

    def _fast_ok(self, row: list[Any]) -> bool:
        if not self.numeric:
            return False
        return all(type(value) in _NUMBER and math.isfinite(value) for value in row)

    def _checked(self, row: list[Any], where: str, extra: set[str]) -> list[Any]:
        problems = [
            {"field": f"{where}.{name}", "problem": f"not a feature of {self.model}"}
            for name in sorted(extra)
        ]
        for feature, value in zip(self.features, row, strict=True):
            if value is None and self.missing_strings and feature.type is FeatureType.STRING:
                continue
            problem = _problem(feature, value)
            if problem:
                problems.append({"field": f"{where}.{feature.name}", "problem": problem})
        if problems:
            summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise InvalidInput(f"invalid features: {summary}{more}", details=problems)
        return [_coerce(feature, value) for feature, value in zip(self.features, row, strict=True)]


class _Missing:
    pass


_MISSING: Any = _Missing()


def _problem(feature: Feature, value: Any) -> str | None:
    if value is _MISSING:
        return "missing"
    if value is None:
        return "must not be null"
    if feature.type is FeatureType.STRING:
        return None if isinstance(value, str) else f"must be a string, got {type(value).__name__}"
    if feature.type is FeatureType.BOOL:
        return (
            None if isinstance(value, bool) or value in (0, 1) else f"must be true/false, got {value!r}"[:120]
        )
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        return f"must be a number, got {type(value).__name__} {value!r}"[:120]
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    if feature.type is FeatureType.INT and not float(value).is_integer():
        return f"must be an integer, got {value}"
    return None


def _coerce(feature: Feature, value: Any) -> Any:
    if feature.type is FeatureType.STRING:
        return value
    return float(value)
