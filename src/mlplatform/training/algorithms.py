"""The algorithms a job may ask for: which estimator class each is, per task, and which parameters it takes.

The libraries are imported only when a class is looked up (submitting a job checks its hyperparameters
against the estimator's `get_params()`; the Dask worker builds it).
"""

from __future__ import annotations

import importlib
import re
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
# What a worker imports as it joins the cluster (stores/jobs/warmup.py), before any job needs it.
TRAINING_MODULES = (
    "pandas",
    "pyarrow.parquet",
    "pyarrow.csv",
    "sklearn.model_selection",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "xgboost",
    "lightgbm",
    "skops.io",
    "mlplatform.training.worker",
)
# Set by the job itself: progress callbacks, chunked growth and the evaluation set.
RESERVED = frozenset({"callbacks", "warm_start", "eval_set", "eval_metric", "early_stopping_rounds"})


def estimator_class(algorithm: str, task: Task) -> Any:
    spec = ALGORITHMS[algorithm]
    name = spec.classifier if task is Task.CLASSIFICATION else spec.regressor
    if name is None:
        raise ValueError(f"{algorithm} does not do {task.value}")
    return getattr(importlib.import_module(spec.module), name)


def seeded(estimator_type: Any, hyperparameters: dict[str, Any], seed: int) -> dict[str, Any]:
    """The job's hyperparameters with `random_state` set to its seed where the estimator takes one and the
    job leaves it out (an explicit value, even null for "a new draw each fit", is kept): the same job on the
    same data trains the same model (the forest's bootstrap, boosting's row and column sampling)."""
    params = dict(hyperparameters)
    if "random_state" not in params and "random_state" in estimator_type().get_params():
        params["random_state"] = seed
    return params


# What the boosting libraries' scikit-learn wrappers only check once the fit has started (or never): each
# common parameter's test and what it must be. scikit-learn's estimators check their own (`_validate_params`).
_INT = (int,)
_NUMBER = (int, float)
BOOSTING_RULES: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "n_estimators": (_INT, lambda v: v >= 1, "an integer of at least 1"),
    "learning_rate": (_NUMBER, lambda v: v > 0, "a number above 0"),
    "max_depth": (_INT, lambda v: v >= -1, "an integer (0 or -1 for no limit where the library allows it)"),
    "num_leaves": (_INT, lambda v: v >= 2, "an integer of at least 2"),
    "subsample": (_NUMBER, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "colsample_bytree": (_NUMBER, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "min_child_weight": (_NUMBER, lambda v: v >= 0, "a number of at least 0"),
    "min_child_samples": (_INT, lambda v: v >= 0, "an integer of at least 0"),
    "reg_alpha": (_NUMBER, lambda v: v >= 0, "a number of at least 0"),
    "reg_lambda": (_NUMBER, lambda v: v >= 0, "a number of at least 0"),
}
_SKLEARN_PARAMETER = re.compile(r"The '(\w+)' parameter of \w+ (.*)")


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


def value_problems(algorithm: str, task: Task, hyperparameters: dict[str, Any]) -> dict[str, str]:
    """Per hyperparameter (each one the estimator takes) whose value it refuses, why: found before a job is
    queued rather than when its fit starts."""
    problems = {}
    if ALGORITHMS[algorithm].library == "sklearn":
        try:
            estimator_class(algorithm, task)(**hyperparameters)._validate_params()
        except (ValueError, TypeError) as exc:
            found = _SKLEARN_PARAMETER.search(str(exc))
            key = found.group(1) if found else next(iter(hyperparameters), "hyperparameters")
            problems[key] = found.group(2) if found else str(exc)[:300]
        return problems
    for key, value in hyperparameters.items():
        if key not in BOOSTING_RULES or value is None:
            continue
        types, test, wanted = BOOSTING_RULES[key]
        if isinstance(value, bool) or not isinstance(value, types) or not test(value):
            problems[key] = f"must be {wanted}; got {value!r}"
    return problems
