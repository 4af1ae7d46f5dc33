"""Scikit-learn estimators and pipelines served natively, without per-call joblib, validation or warnings."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import sklearn
from sklearn.pipeline import Pipeline
from threadpoolctl import ThreadpoolController

from mlplatform.formats.base import ModelDescription
from mlplatform.serving.runtimes.base import (
    TREE_AVERAGES,
    ClassOrder,
    RawPrediction,
    Runtime,
    feature_count,
    synthetic_sample,
    task_is_classification,
)

# Classifiers whose `predict` is exactly the argmax of `predict_proba`: one call gives both outputs.
_ARGMAX_CLASSIFIERS = frozenset(
    {
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "HistGradientBoostingClassifier",
        "LogisticRegression",
        "LogisticRegressionCV",
    }
)


class SklearnRuntime(Runtime):
    """Calls the estimator; forests and trees take a direct path, checked bit-for-bit against it at build."""

    name = "sklearn"

    def __init__(self, model: Any, description: ModelDescription) -> None:
        self.model = model
        self.description = description
        self.n_features = feature_count(description, getattr(model, "n_features_in_", None))
        _use_one_job(model)
        _controller()  # scan the loaded libraries now rather than on the first request
        self._classification = task_is_classification(description)
        self._order = ClassOrder(model.classes_, description) if self._classification else None
        self._names, self._reorder = _frame_columns(model, description)
        final = model.steps[-1][1] if isinstance(model, Pipeline) else model
        self._has_proba = self._classification and hasattr(model, "predict_proba")
        self._proba_gives_labels = self._has_proba and type(final).__name__ in _ARGMAX_CLASSIFIERS
        self._trees = _trees(model)
        if self._trees and not self._trees_match_estimator():
            self._trees = []

    @property
    def direct_tree_path(self) -> bool:
        """Whether predictions bypass the estimator's own `predict` (a forest or tree, verified identical)."""
        return bool(self._trees)

    def predict(self, X: np.ndarray) -> RawPrediction:
        if self._trees:
            return self._from_raw(self._average_trees(X))
        _one_openmp_thread_here()
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            data = self._input(X)
            if self._order is None:
                return RawPrediction(values=np.asarray(self.model.predict(data)))
            if not self._has_proba:
                return RawPrediction(values=self._order.labels_from_model(self.model.predict(data)))
            proba = self._order.probabilities(self.model.predict_proba(data))
            if self._proba_gives_labels:
                return RawPrediction(self._order.labels_from_probabilities(proba), proba)
            return RawPrediction(self._order.labels_from_model(self.model.predict(data)), proba)

    def _input(self, X: np.ndarray) -> np.ndarray | pd.DataFrame:
        if X.dtype == object:  # string features: a missing one is NaN, as in the DataFrame it was fitted on
            X = np.where(pd.isna(X), np.nan, X)
        if self._names is None:
            return X
        # Fitted on a DataFrame: pass one too (a ColumnTransformer may select by name, and numpy input warns).
        return pd.DataFrame(
            X if self._reorder is None else X[:, self._reorder], columns=self._names, copy=False
        )

    def _average_trees(self, X: np.ndarray) -> np.ndarray:
        # The same arithmetic, in the same order, as the forest's own predict with n_jobs=1.
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        width = len(self._order) if self._order is not None else 1
        total = np.zeros((X32.shape[0], width))
        for tree in self._trees:
            total += tree.predict(X32)[:, :width]
        if len(self._trees) > 1:
            total /= len(self._trees)
        return total

    def _from_raw(self, raw: np.ndarray) -> RawPrediction:
        if self._order is None:
            return RawPrediction(values=raw[:, 0])
        proba = self._order.probabilities(raw)
        return RawPrediction(self._order.labels_from_probabilities(proba), proba)

    def _trees_match_estimator(self) -> bool:
        sample = synthetic_sample(self.n_features, 64)
        direct = self._average_trees(sample)
        with sklearn.config_context(assume_finite=True):
            if self._order is None:
                return np.array_equal(direct[:, 0], self.model.predict(self._input(sample)))
            return np.array_equal(direct, self.model.predict_proba(self._input(sample)))


_pinned = threading.local()


def _one_openmp_thread_here() -> None:
    """Limits OpenMP (HistGradientBoosting, neighbour searches) to one thread, once per predicting thread.

    OpenMP's thread count is a per-thread setting, so a limit set at build time would not reach the event
    loop or the executor threads; setting it on first use avoids threadpoolctl's cost (~20 µs) on every call.
    It stays set: serving threads are meant to run one engine thread each.
    """
    if not getattr(_pinned, "done", False):
        _controller().limit(limits=1, user_api="openmp")
        _pinned.done = True


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # inspecting the loaded libraries takes tens of milliseconds: do it once


def _use_one_job(model: Any) -> None:
    """Serving threads are the unit of parallelism: joblib workers per call only add latency."""
    params = model.get_params(deep=True)
    single = {key: 1 for key, value in params.items() if key.endswith("n_jobs") and value not in (None, 1)}
    if single:
        model.set_params(**single)


def _frame_columns(model: Any, description: ModelDescription) -> tuple[list[str] | None, np.ndarray | None]:
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is None:
        return None, None
    names = [str(name) for name in fitted]
    declared = [feature.name for feature in description.features]
    if sorted(declared) != sorted(names) or declared == names:
        return names, None
    return names, np.asarray([declared.index(name) for name in names])


def _trees(model: Any) -> list[Any]:
    if type(model).__name__ not in TREE_AVERAGES or getattr(model, "n_outputs_", 1) != 1:
        return []
    estimators = getattr(model, "estimators_", [model])
    return [estimator.tree_ for estimator in estimators]
