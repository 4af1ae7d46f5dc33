"""String features to the category codes a booster was trained on (XGBoost and LightGBM keep the list)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlplatform.formats.base import ModelDescription
from mlplatform.serving.runtimes.base import string_columns


class CategoryCodes:
    """Encodes an object matrix (strings in the string features, numbers elsewhere) as the float matrix a
    booster predicts from: each string becomes its code in `categories`, the list the model was trained
    with; a missing value or a category it never saw becomes NaN, which the booster treats as missing."""

    def __init__(self, description: ModelDescription, categories: Sequence[Sequence[Any] | None]) -> None:
        self.strings = string_columns(description)
        self.numbers = [i for i in range(len(description.features)) if i not in set(self.strings)]
        self.codes: list[dict[str, float]] = []
        for column in self.strings:
            levels = categories[column] if column < len(categories) else None
            if levels is None:
                name = description.features[column].name
                raise ValueError(
                    f"feature {name!r} is a string in the signature but the model holds no categories for "
                    "it; train it on a pandas category column"
                )
            self.codes.append({str(level): float(code) for code, level in enumerate(levels)})

    def encode(self, X: np.ndarray) -> np.ndarray:
        if X.dtype != object:  # numbers only (no string feature given as text): codes already
            return X
        out = np.empty(X.shape, dtype=np.float64)
        if self.numbers:
            out[:, self.numbers] = X[:, self.numbers].astype(np.float64)
        for column, codes in zip(self.strings, self.codes, strict=True):
            out[:, column] = [
                codes.get(value, math.nan) if value is not None else math.nan for value in X[:, column]
            ]
        return out


def xgboost_categories(booster: Any, n_features: int) -> list[list[Any] | None]:
    """Per feature, the categories an XGBoost (3.1 or later) booster was trained with, or None."""
    exported = booster.get_categories(export_to_arrow=True).to_arrow() or []
    found: list[list[Any] | None] = [None] * n_features
    for index, (_, levels) in enumerate(exported[:n_features]):
        found[index] = None if levels is None else levels.to_pylist()
    return found


def lightgbm_categories(booster: Any, description: ModelDescription) -> list[list[Any] | None]:
    """LightGBM keeps one list per pandas category column (`pandas_categorical`), in column order: the
    signature's string features, in order."""
    lists = list(getattr(booster, "pandas_categorical", None) or [])
    strings = string_columns(description)
    if len(lists) != len(strings):
        raise ValueError(
            f"the signature has {len(strings)} string features but the LightGBM model holds categories for "
            f"{len(lists)} columns; train it on pandas category columns, one per string feature"
        )
    found: list[list[Any] | None] = [None] * len(description.features)
    for column, levels in zip(strings, lists, strict=True):
        found[column] = list(levels)
    return found
