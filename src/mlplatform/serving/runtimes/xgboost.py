"""XGBoost boosters served natively through `inplace_predict`, pinned to one thread."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xgboost

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
from mlplatform.serving.runtimes.categories import CategoryCodes, xgboost_categories

_PROBABILITY_OBJECTIVES = frozenset({"binary:logistic", "multi:softprob"})
_MARGIN_OBJECTIVES = frozenset({"binary:logitraw", "multi:softmax"})


def booster_of(model: Any) -> xgboost.Booster:
    return model.get_booster() if isinstance(model, xgboost.XGBModel) else model


def objective_of(booster: xgboost.Booster) -> tuple[str, int]:
    learner = json.loads(booster.save_config())["learner"]
    return learner["objective"]["name"], int(learner["learner_model_param"]["num_class"])


class XGBoostRuntime(Runtime):
    """A `Booster`, or the booster inside an sklearn-API model; classifiers give probabilities and labels."""

    name = "xgboost"

    def __init__(self, model: Any, description: ModelDescription, *, threads: int = 1) -> None:
        self.booster = booster_of(model)
        # Thread count is a booster parameter, and set_param is not safe during predictions: set it once here.
        self.booster.set_param({"nthread": threads})
        self.description = description
        self.n_features = feature_count(description, self.booster.num_features())
        self._iterations = iteration_range(model)
        self._categories: CategoryCodes | None = None
        if string_columns(description):
            self._categories = CategoryCodes(description, xgboost_categories(self.booster, self.n_features))
        self.objective, num_class = objective_of(self.booster)
        self._order: ClassOrder | None = None
        if task_is_classification(description):
            if self.objective not in _PROBABILITY_OBJECTIVES | _MARGIN_OBJECTIVES | {"binary:hinge"}:
                raise ValueError(f"XGBoost objective {self.objective!r} is not a classification objective")
            self._order = ClassOrder(range(max(num_class, 2)), description, positional=True)

    def predict(self, X: np.ndarray) -> RawPrediction:
        if self._categories is not None:
            X = self._categories.encode(X)
        if self._order is None:
            return RawPrediction(values=self._run(X, "value"))
        if self.objective == "binary:hinge":
            return RawPrediction(values=self._order.labels[self._run(X, "value").astype(np.intp)])
        if self.objective in _MARGIN_OBJECTIVES:
            proba = _from_margin(self._run(X, "margin"))
        else:
            output = self._run(X, "value")
            proba = binary_probabilities(output) if output.ndim == 1 else output
        return RawPrediction(self._order.labels_from_probabilities(proba), proba)

    def _run(self, X: np.ndarray, kind: str) -> np.ndarray:
        result = self.booster.inplace_predict(
            X, iteration_range=self._iterations, predict_type=kind, validate_features=False
        )
        return np.asarray(result)


def _from_margin(margin: np.ndarray) -> np.ndarray:
    if margin.ndim == 1:
        return binary_probabilities(1.0 / (1.0 + np.exp(-margin)))
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def iteration_range(model: Any) -> tuple[int, int]:
    """After early stopping the sklearn wrappers predict up to the best iteration; a bare booster uses all."""
    if not isinstance(model, xgboost.XGBModel):
        return (0, 0)
    try:
        return (0, int(model.best_iteration) + 1)
    except AttributeError:
        return (0, 0)
