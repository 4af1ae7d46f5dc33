"""What runs on a Dask worker: read the dataset from storage, train with progress and cancel, evaluate, save.

`run_job(spec)` receives a plain dict (the storage settings and the dataset's key, never the data) and
returns the saved model's bytes with its metrics, or `{"status": "cancelled"}`. It reports progress through
a Dask `Variable` and watches a Dask `Event` for a cancel, so the API process never trains.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mlplatform.formats.base import Task
from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training.algorithms import ALGORITHMS
from mlplatform.training.distributed import run_distributed
from mlplatform.training.fitting import evaluate, fit
from mlplatform.training.progress import JobCancelled, Reporter


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

    if spec.get("distributed"):
        return run_distributed(spec)
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
