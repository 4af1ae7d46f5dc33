"""LightGBM boosters served natively, one thread per prediction."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np

from mlplatform.formats.base import ModelDescription
from mlplatform.serving.runtimes.base import (
    ClassOrder,
    RawPrediction,
    Runtime,
    binary_probabilities,
    feature_count,
    string_columns,
    task_is_classification,
)
from mlplatform.serving.runtimes.categories import CategoryCodes, lightgbm_categories

_CLASSIFICATION_OBJECTIVES = frozenset({"binary", "multiclass", "multiclassova", "cross_entropy"})


def booster_of(model: Any) -> lightgbm.Booster:
    return model.booster_ if isinstance(model, lightgbm.LGBMModel) else model


def objective_of(booster: lightgbm.Booster) -> tuple[str, int]:
    header = booster.dump_model(num_iteration=1)
    return str(header["objective"]).split()[0], int(header["num_class"])


class LightGBMRuntime(Runtime):
    """A `Booster`, or the booster inside an sklearn-API model; classifiers give probabilities and labels."""

    name = "lightgbm"

    def __init__(self, model: Any, description: ModelDescription, *, threads: int = 1) -> None:
        self.booster = booster_of(model)
        self.description = description
        self.n_features = feature_count(description, self.booster.num_feature())
        # LightGBM reads its thread count per call; without it every predict spins up all cores.
        self.threads = threads
        self.objective, num_class = objective_of(self.booster)
        self._categories: CategoryCodes | None = None
        if string_columns(description):
            self._categories = CategoryCodes(description, lightgbm_categories(self.booster, description))
        self._order: ClassOrder | None = None
        if task_is_classification(description):
            if self.objective not in _CLASSIFICATION_OBJECTIVES:
                raise ValueError(f"LightGBM objective {self.objective!r} is not a classification objective")
            self._order = ClassOrder(range(max(num_class, 2)), description, positional=True)

    def predict(self, X: np.ndarray) -> RawPrediction:
        if self._categories is not None:
            X = self._categories.encode(X)
        output = np.asarray(self.booster.predict(X, num_threads=self.threads))
        if self._order is None:
            return RawPrediction(values=output)
        proba = binary_probabilities(output) if output.ndim == 1 else output
        return RawPrediction(self._order.labels_from_probabilities(proba), proba)
