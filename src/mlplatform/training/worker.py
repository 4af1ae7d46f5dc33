"""What runs on a Dask worker: read the dataset from storage, train with progress and cancel, evaluate, save.

`run_job(spec)` receives a plain dict (the storage settings and the dataset's key, never the data) and
returns the saved model's bytes with its metrics, or `{"status": "cancelled"}`. It reports progress through
a Dask `Variable` and watches a Dask `Event` for a cancel, so the API process never trains.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlplatform.formats.base import Task
from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training.algorithms import ALGORITHMS, estimator_class

REPORT_EVERY = 0.25  # seconds between progress updates (each is a round trip to the scheduler)
CHUNKS = 10  # forests and sklearn boosting grow in this many warm-started steps


class JobCancelled(Exception):
    pass


class Reporter:
    """Progress to the job's Variable, throttled; the cancel Event, looked at no more than every 0.2 s."""

    def __init__(self, progress_name: str, cancel_name: str) -> None:
        import distributed

        dd: Any = distributed  # untyped library
        self.variable = dd.Variable(progress_name)
        self.event = dd.Event(cancel_name)
        self.worker: str = dd.get_worker().address
        self.began = time.monotonic()
        self.reported = 0.0
        self.checked = 0.0
        self.cancelled = False

    def update(
        self, current: int, total: int, unit: str, metric_name: str | None = None, metric: float | None = None
    ) -> None:
        now = time.monotonic()
        if now - self.reported < REPORT_EVERY and current < total:
            return
        self.reported = now
        fraction = min(current / total, 1.0) if total else 1.0
        elapsed = now - self.began
        progress = {
            "fraction": fraction,
            "current": current,
            "total": total,
            "unit": unit,
            "metric_name": metric_name,
            "metric": float(metric) if metric is not None and np.isfinite(metric) else None,
            "eta_seconds": elapsed / fraction * (1 - fraction) if fraction > 0 else None,
        }
        self.variable.set({"worker": self.worker, "progress": progress})

    def cancel_asked(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.checked >= 0.2:
            self.checked = now
            self.cancelled = bool(self.event.is_set())
        return self.cancelled


def read_table(spec: dict[str, Any]) -> Any:
    """The dataset as a pandas DataFrame, read from the artifact store by this worker."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    async def fetch() -> bytes:
        store = create_artifact_store(StorageSettings.model_validate(spec["storage"]))
        try:
            return await store.read_bytes(spec["dataset_key"])
        finally:
            await store.close()

    data = asyncio.run(fetch())
    source = io.BytesIO(data)
    table = pq.read_table(source) if spec["dataset_format"] == "parquet" else pacsv.read_csv(source)
    return table.select([*spec["features"], spec["target"]]).to_pandas()


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    reporter = Reporter(spec["progress_name"], spec["cancel_name"])
    task = Task(spec["task"])
    frame = read_table(spec)
    frame = frame[frame[spec["target"]].notna()]
    X = frame[spec["features"]].to_numpy(dtype=np.float64)
    y = frame[spec["target"]].to_numpy()
    classes: list[Any] | None = None
    if task is Task.CLASSIFICATION:
        classes = sorted(set(y.tolist()))
        if len(classes) < 2:
            raise ValueError(f"target {spec['target']!r} has a single class: nothing to learn")
        y = np.searchsorted(np.asarray(classes, dtype=object), y).astype(np.int64)
        counts = np.bincount(y)
        stratify = y if counts.min() >= 2 else None
    else:
        y = y.astype(np.float64)
        stratify = None
    X_train, X_val, y_train, y_val = train_test_split(
        X, y, test_size=spec["validation_fraction"], random_state=spec.get("seed", 0), stratify=stratify
    )
    if task is Task.CLASSIFICATION and len(set(y_train.tolist())) < 2:
        raise ValueError("the training split holds a single class: use a larger dataset")
    sklearn_labels = ALGORITHMS[spec["algorithm"]].library == "sklearn" and classes is not None
    y_fit, y_check = y_train, y_val
    if sklearn_labels:  # scikit-learn keeps the labels themselves (`classes_`) in the saved model
        y_fit, y_check = np.asarray(classes)[y_train], np.asarray(classes)[y_val]
    try:
        model = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
    except JobCancelled:
        return {"status": "cancelled", "worker": reporter.worker}
    if reporter.cancel_asked():
        return {"status": "cancelled", "worker": reporter.worker}
    metrics = evaluate(model, task, X_val, y_val, classes if sklearn_labels else None)
    filename, artifact = save(spec, model)
    return {
        "status": "succeeded",
        "worker": reporter.worker,
        "artifact": artifact,
        "filename": filename,
        "metrics": metrics,
        "classes": None if sklearn_labels else classes,
    }


def fit(
    spec: dict[str, Any],
    task: Task,
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
) -> Any:
    algorithm = ALGORITHMS[spec["algorithm"]]
    params = dict(spec["hyperparameters"])
    estimator_type = estimator_class(spec["algorithm"], task)
    if algorithm.library == "xgboost":
        return _fit_xgboost(estimator_type, params, reporter, X_train, y_train, X_val, y_val)
    if algorithm.library == "lightgbm":
        return _fit_lightgbm(estimator_type, params, reporter, X_train, y_train, X_val, y_val)
    model = estimator_type(**params)
    rounds = algorithm.rounds or ""
    total = int(model.get_params()[rounds]) if rounds else 0
    if total < 1:  # a single fit (a bad count is refused by the library's own check)
        reporter.update(0, 1, "fit")
        model.fit(X_train, y_train)
        reporter.update(1, 1, "fit")
        return model
    step = max(1, total // CHUNKS)
    for grown in range(step, total + step, step):
        model.set_params(warm_start=True, **{rounds: min(grown, total)})
        model.fit(X_train, y_train)
        reporter.update(min(grown, total), total, "tree", "score", float(model.score(X_val, y_val)))
        if reporter.cancel_asked():
            raise JobCancelled
    model.set_params(warm_start=False)
    return model


def _fit_xgboost(
    estimator_type: Any,
    params: dict[str, Any],
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
) -> Any:
    import xgboost

    total = int(params.get("n_estimators") or 100)

    class Progress(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            name, value = None, None
            for data in evals_log.values():
                for metric_name, values in data.items():
                    name, value = metric_name, float(values[-1])
            reporter.update(epoch + 1, total, "round", name, value)
            return reporter.cancel_asked()

    params.setdefault("n_jobs", 1)
    model = estimator_type(**params, callbacks=[Progress()])
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)], verbose=False)
    if reporter.cancel_asked():
        raise JobCancelled
    return model


def _fit_lightgbm(
    estimator_type: Any,
    params: dict[str, Any],
    reporter: Reporter,
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
) -> Any:
    total = int(params.get("n_estimators") or 100)

    def progress(env: Any) -> None:
        name, value = None, None
        if env.evaluation_result_list:
            _, name, value, _ = env.evaluation_result_list[0][:4]
        reporter.update(env.iteration + 1, total, "round", name, value)
        if reporter.cancel_asked():
            raise JobCancelled

    params.setdefault("n_jobs", 1)
    params.setdefault("verbose", -1)
    model = estimator_type(**params)
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)], callbacks=[progress])
    return model


def evaluate(
    model: Any, task: Task, X_val: npt.NDArray[Any], y_val: npt.NDArray[Any], labels: list[Any] | None = None
) -> dict[str, float]:
    """Validation metrics with sklearn.metrics on the held-out rows (`y_val` label codes; `labels` the
    classes when the model predicts labels rather than codes)."""
    from sklearn import metrics

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
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X_val)
        all_labels = list(range(proba.shape[1]))
        found["log_loss"] = float(metrics.log_loss(y_val, proba, labels=all_labels))
        if len(set(y_val.tolist())) == proba.shape[1]:
            if proba.shape[1] == 2:
                found["roc_auc"] = float(metrics.roc_auc_score(y_val, proba[:, 1]))
            else:
                found["roc_auc"] = float(metrics.roc_auc_score(y_val, proba, multi_class="ovr"))
    return found


def save(spec: dict[str, Any], model: Any) -> tuple[str, bytes]:
    """The model in a format the registry loads without executing code."""
    library = ALGORITHMS[spec["algorithm"]].library
    with tempfile.TemporaryDirectory(prefix="mlplatform-train-") as folder:
        if library == "xgboost":
            path = Path(folder) / "model.ubj"
            model.get_booster().save_model(str(path))
        elif library == "lightgbm":
            path = Path(folder) / "model.txt"
            model.booster_.save_model(str(path))
        else:
            import skops.io

            path = Path(folder) / "model.skops"
            skops.io.dump(model, path)
        return path.name, path.read_bytes()
