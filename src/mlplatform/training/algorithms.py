"""The algorithms a job may ask for: which estimator class each is, per task, and which parameters it takes.

The libraries are imported only when a class is looked up (submitting a job checks its hyperparameters
against the estimator's `get_params()`; the Dask worker builds it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from mlplatform.formats.base import Task


@dataclass(frozen=True, slots=True)
class Algorithm:
    module: str
    classifier: str | None
    regressor: str | None
    library: str  # sklearn | xgboost | lightgbm: decides the saved format and how progress is reported
    rounds: str | None = None  # the parameter counting rounds or trees, grown in chunks or reported per round

    def tasks(self) -> list[Task]:
        return [
            t
            for t, name in ((Task.CLASSIFICATION, self.classifier), (Task.REGRESSION, self.regressor))
            if name
        ]


ALGORITHMS: dict[str, Algorithm] = {
    "random_forest": Algorithm(
        "sklearn.ensemble", "RandomForestClassifier", "RandomForestRegressor", "sklearn", "n_estimators"
    ),
    "gradient_boosting": Algorithm(
        "sklearn.ensemble",
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
        "sklearn",
        "n_estimators",
    ),
    "hist_gradient_boosting": Algorithm(
        "sklearn.ensemble",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
        "sklearn",
        "max_iter",
    ),
    "logistic_regression": Algorithm("sklearn.linear_model", "LogisticRegression", None, "sklearn"),
    "linear_regression": Algorithm("sklearn.linear_model", None, "LinearRegression", "sklearn"),
    "ridge": Algorithm("sklearn.linear_model", "RidgeClassifier", "Ridge", "sklearn"),
    "xgboost": Algorithm("xgboost", "XGBClassifier", "XGBRegressor", "xgboost", "n_estimators"),
    "lightgbm": Algorithm("lightgbm", "LGBMClassifier", "LGBMRegressor", "lightgbm", "n_estimators"),
}
# Set by the job itself: progress callbacks, chunked growth and the evaluation set.
RESERVED = frozenset({"callbacks", "warm_start", "eval_set", "eval_metric", "early_stopping_rounds"})


def estimator_class(algorithm: str, task: Task) -> Any:
    spec = ALGORITHMS[algorithm]
    name = spec.classifier if task is Task.CLASSIFICATION else spec.regressor
    if name is None:
        raise ValueError(f"{algorithm} does not do {task.value}")
    return getattr(importlib.import_module(spec.module), name)


def parameter_problems(algorithm: str, task: Task, hyperparameters: dict[str, Any]) -> dict[str, str]:
    """Per hyperparameter the estimator does not take (or the job sets itself), why."""
    accepted = set(estimator_class(algorithm, task)().get_params())
    problems = {}
    for key in hyperparameters:
        if key in RESERVED:
            problems[key] = "set by the training job itself"
        elif key not in accepted:
            problems[key] = f"not a parameter of {algorithm} (see the library's documentation)"
    return problems
