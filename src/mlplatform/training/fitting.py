"""Fitting on a Dask worker: each library with its own progress callback and cancel check, then validation.

Forests and scikit-learn boosting grow in CHUNKS warm-started steps; XGBoost and LightGBM report every round.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlplatform.formats.base import Task
from mlplatform.training.algorithms import ALGORITHMS, estimator_class, seeded
from mlplatform.training.checkpoints import WorkerCheckpoints, checkpoints_for, resume_point
from mlplatform.training.progress import JobCancelled, Reporter

CHUNKS = 10  # forests and sklearn boosting grow in this many warm-started steps
# The validation metric that progress shows after every round (or chunk) is computed on at most this many
# held-out rows, picked at random: on all of them it cost XGBoost 10-15 % more time than the fit itself. The
# job's validation metrics (`evaluate`) use every held-out row. LightGBM is the exception: it is given every
# held-out row, as the library alone would be, and its own running scores of them at the last round are the
# job's predictions for `evaluate` (`LastPredictions`) instead of a second pass over them.
PROGRESS_ROWS = 20_000
CHECKED_ROWS = 1_000  # LightGBM's kept predictions are checked against its predict on this many rows


def progress_rows(X: Any, y: Any, most: int = PROGRESS_ROWS) -> tuple[Any, Any]:
    """At most `most` rows of X and y (arrays or pandas), picked at random with a fixed seed."""
    if len(y) <= most:
        return X, y
    index = np.sort(np.random.default_rng(0).choice(len(y), most, replace=False))

    def pick(values: Any) -> Any:
        return values.iloc[index] if hasattr(values, "iloc") else values[index]

    return pick(X), pick(y)


@dataclass
class Fitted:
    """A fitted model and, when the library computed them while fitting, its predictions on every held-out
    row (`predict_proba` of a classifier, `predict` of a regressor), for `evaluate`."""

    model: Any
    validation: npt.NDArray[np.float64] | None = None


def fit(
    spec: dict[str, Any],
    task: Task,
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
) -> Fitted:
    algorithm = ALGORITHMS[spec["algorithm"]]
    estimator_type = estimator_class(spec["algorithm"], task)
    params = seeded(estimator_type, spec["hyperparameters"], spec.get("seed", 0))
    if algorithm.library == "lightgbm":
        with checkpoints_for(spec, "txt") as saved:
            return _fit_lightgbm(estimator_type, params, reporter, X_train, y_train, X_val, y_val, saved)
    X_val, y_val = progress_rows(X_val, y_val)
    if algorithm.library == "xgboost":
        with checkpoints_for(spec, "ubj") as saved:
            return Fitted(
                _fit_xgboost(estimator_type, params, reporter, X_train, y_train, X_val, y_val, saved)
            )
    return Fitted(_fit_sklearn(spec, estimator_type, params, reporter, X_train, y_train, X_val, y_val))


def _fit_sklearn(
    spec: dict[str, Any],
    estimator_type: Any,
    params: dict[str, Any],
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
) -> Any:
    algorithm = ALGORITHMS[spec["algorithm"]]
    model = estimator_type(**params)
    rounds = algorithm.rounds or ""
    total = int(model.get_params()[rounds]) if rounds else 0
    if total < 1:  # a single fit (a bad count is refused by the library's own check)
        reporter.update(0, 1, "fit")
        model.fit(X_train, y_train)
        reporter.update(1, 1, "fit")
        return model
    step = max(1, total // CHUNKS)
    score = ForestScore(X_val, y_val) if spec["algorithm"] == "random_forest" else None
    for grown in range(step, total + step, step):
        model.set_params(warm_start=True, **{rounds: min(grown, total)})
        model.fit(X_train, y_train)
        value = score.after(model) if score is not None else float(model.score(X_val, y_val))
        reporter.update(min(grown, total), total, "tree", "score", value)
        if reporter.cancel_asked():
            raise JobCancelled
    model.set_params(warm_start=False)
    return model


class ForestScore:
    """`model.score` of a random forest grown in chunks, from each chunk's new trees only. A forest predicts
    the mean of its trees' predictions, so a running sum of them gives the same accuracy (or R²) as scoring
    the whole forest again after every chunk, which cost the sum of 1..CHUNKS chunks' worth of trees."""

    def __init__(self, X: Any, y: Any) -> None:
        from sklearn.utils import check_array

        # the trees' own input: float32 rows (what the forest hands them); sparse rows go the forest's way
        self.raw, self.y = X, y
        self.X = None if hasattr(X, "tocsr") else check_array(X, dtype=np.float32)
        self.sum: npt.NDArray[np.float64] | None = None
        self.trees = 0

    def after(self, model: Any) -> float:
        if self.X is None:
            return float(model.score(self.raw, self.y))
        from sklearn.metrics import accuracy_score, r2_score

        classifier = hasattr(model, "classes_")
        for tree in model.estimators_[self.trees :]:
            if classifier:
                part = tree.predict_proba(self.X, check_input=False)
            else:
                part = tree.predict(self.X, check_input=False)
            self.sum = part if self.sum is None else self.sum + part
        self.trees = len(model.estimators_)
        assert self.sum is not None
        if classifier:
            return float(accuracy_score(self.y, model.classes_[np.argmax(self.sum, axis=1)]))
        return float(r2_score(self.y, self.sum / self.trees))


def xgboost_booster(data: bytes) -> Any:
    """An XGBoost booster from a checkpoint's UBJ bytes."""
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(data))
    return booster


def _fit_xgboost(
    estimator_type: Any,
    params: dict[str, Any],
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
    checkpoints: WorkerCheckpoints | None = None,
) -> Any:
    import xgboost

    total = int(params.get("n_estimators") or 100)
    done, start = resume_point(checkpoints, total, xgboost_booster)
    if start is not None:
        reporter.resume(done)

    class Progress(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            name, value = None, None
            for data in evals_log.values():
                for metric_name, values in data.items():
                    name, value = metric_name, float(values[-1])
            rounds = done + epoch + 1  # xgboost counts the rounds of this call only
            reporter.update(rounds, total, "round", name, value)
            if checkpoints is not None and checkpoints.due(rounds, total) and not reporter.cancel_now():
                checkpoints.save(rounds, bytes(model.save_raw("ubj")))
            return reporter.cancel_asked()

    params.setdefault("n_jobs", 1)
    params["n_estimators"] = total - done  # a resumed run does the remaining rounds only
    model = estimator_type(**params, callbacks=[Progress()])
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)], verbose=False, xgb_model=start)
    if reporter.cancel_asked():
        raise JobCancelled
    return model


class LastPredictions:
    """The held-out rows' predictions of a LightGBM fit's last round, taken from the training booster's own
    running scores of them (`Booster.eval_valid` with an evaluation function that keeps what it is given:
    LightGBM's transformed scores, i.e. what `predict_proba` or `predict` of the final model gives). LightGBM
    scores its validation rows round by round anyway, as the library alone does when given them; predicting
    them again afterwards cost the job a second pass (1.5 s for 200,000 rows on one thread). Asking for them
    at every round instead (an `eval_metric`) cost 6 ms a round in copies."""

    def __init__(self) -> None:
        self.values: npt.NDArray[np.float64] | None = None

    def at_round(self, env: Any) -> None:
        """Called after every round with LightGBM's callback environment."""
        if env.iteration == env.end_iteration - 1:
            env.model.eval_valid(feval=self._keep)

    def _keep(self, predictions: Any, data: Any) -> tuple[str, float, bool]:
        self.values = np.array(predictions, dtype=np.float64)
        return "kept", 0.0, False

    def predictions(self, model: Any, X_val: Any) -> npt.NDArray[np.float64] | None:
        """The kept predictions in `predict_proba` (classifier) or `predict` (regressor) form, if they are
        the model's: checked against its own predictions on the first CHECKED_ROWS rows, else None."""
        if self.values is None:  # no round ran (a job resumed after its last round)
            return None
        found = np.asarray(self.values, dtype=np.float64)
        classifier = hasattr(model, "classes_")
        if classifier and found.ndim == 1:  # binary: the positive class only, as LightGBM's predict gives
            found = np.column_stack([1.0 - found, found])
        head = X_val.iloc[:CHECKED_ROWS] if hasattr(X_val, "iloc") else X_val[:CHECKED_ROWS]
        own = model.predict_proba(head) if classifier else model.predict(head)
        if found.shape[0] != len(X_val) or not np.allclose(found[: len(own)], own, rtol=0, atol=1e-9):
            return None
        return found


def _fit_lightgbm(
    estimator_type: Any,
    params: dict[str, Any],
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
    checkpoints: WorkerCheckpoints | None = None,
) -> Fitted:
    import lightgbm

    total = int(params.get("n_estimators") or 100)
    done, start = resume_point(checkpoints, total, lambda data: lightgbm.Booster(model_str=data.decode()))
    if start is not None:
        reporter.resume(done)
    kept = LastPredictions()

    def progress(env: Any) -> None:
        kept.at_round(env)
        name, value = None, None
        if env.evaluation_result_list:
            _, name, value, _ = env.evaluation_result_list[0][:4]
        rounds = env.iteration + 1  # lightgbm counts from the initial model's rounds
        reporter.update(rounds, total, "round", name, value)
        if checkpoints is not None and checkpoints.due(rounds, total) and not reporter.cancel_now():
            checkpoints.save(rounds, env.model.model_to_string().encode())
        if reporter.cancel_asked():
            raise JobCancelled

    params.setdefault("n_jobs", 1)
    params.setdefault("verbose", -1)
    params["n_estimators"] = total - done  # a resumed run does the remaining rounds only
    model = estimator_type(**params)
    evaluation: dict[str, Any]
    if "eval_X" in inspect.signature(model.fit).parameters:  # lightgbm >= 4.7 deprecates eval_set
        evaluation = {"eval_X": (X_val,), "eval_y": (y_val,)}
    else:
        evaluation = {"eval_set": [(X_val, y_val)]}
    model.fit(X_train, y_train, callbacks=[progress], init_model=start, **evaluation)
    return Fitted(model, kept.predictions(model, X_val))


def evaluate(
    model: Any,
    task: Task,
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
    labels: list[Any] | None = None,
    predictions: npt.NDArray[np.float64] | None = None,
) -> dict[str, float]:
    """Validation metrics with sklearn.metrics on the held-out rows (`y_val` label codes; `labels` the
    classes when the model predicts labels rather than codes; `predictions` the model's own on X_val when
    the fit kept them, see `Fitted`)."""
    from sklearn import metrics

    proba = None
    predicted: Any
    if predictions is not None and task is Task.REGRESSION:
        predicted = predictions
    elif predictions is not None:
        proba = predictions
        predicted = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
    elif task is Task.CLASSIFICATION and hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        # One pass over the rows: a classifier's label is its most probable class (what `predict` does for
        # every algorithm here), so the probabilities give both (LightGBM took 1.3 s a pass on 200,000 rows).
        proba = model.predict_proba(X_val)
        predicted = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
    else:
        predicted = model.predict(X_val)
    if labels is not None:
        predicted = np.searchsorted(np.asarray(labels), predicted)
    if task is Task.REGRESSION:
        return {
            "rmse": float(np.sqrt(metrics.mean_squared_error(y_val, predicted))),
            "mae": float(metrics.mean_absolute_error(y_val, predicted)),
            "r2": float(metrics.r2_score(y_val, predicted)),
        }
    predicted = np.asarray(predicted).astype(np.int64)
    codes = int(max(y_val.max(), predicted.max())) + 1
    average = "binary" if codes <= 2 else "macro"
    found = {
        "accuracy": float(metrics.accuracy_score(y_val, predicted)),
        "precision": float(metrics.precision_score(y_val, predicted, average=average, zero_division=0)),
        "recall": float(metrics.recall_score(y_val, predicted, average=average, zero_division=0)),
        "f1": float(metrics.f1_score(y_val, predicted, average=average, zero_division=0)),
    }
    if proba is None and hasattr(model, "predict_proba"):
        proba = model.predict_proba(X_val)
    if proba is not None:
        all_labels = list(range(proba.shape[1]))
        found["log_loss"] = float(metrics.log_loss(y_val, proba, labels=all_labels))
        if len(set(y_val.tolist())) == proba.shape[1]:
            if proba.shape[1] == 2:
                found["roc_auc"] = float(metrics.roc_auc_score(y_val, proba[:, 1]))
            else:
                found["roc_auc"] = float(metrics.roc_auc_score(y_val, proba, multi_class="ovr"))
    return found
