"""What runs on a Dask worker: read the dataset from storage, train with progress and cancel, evaluate, save.

`run_job(spec)` receives a plain dict (the storage settings and the dataset's key, never the data) and
returns the saved model's bytes with its metrics and a reference sample of the training features, or
`{"status": "cancelled"}`. It reports progress through a Dask `Variable` and watches a Dask `Event` for a
cancel, so the API process never trains.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlplatform.formats.base import Task
from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training import encoding
from mlplatform.training.algorithms import ALGORITHMS
from mlplatform.training.fitting import evaluate, fit
from mlplatform.training.progress import JobCancelled, Reporter

REFERENCE_ROWS = 5_000  # training rows kept with the version as its drift reference
MIN_REFERENCE_ROWS = 10  # monitoring compares nothing smaller; fewer training rows keep no reference


def read_dataset(spec: dict[str, Any], source: dict[str, Any]) -> Any:
    """The job's columns of one dataset (`source`: its key, format and column types) as a pandas
    DataFrame, read from the artifact store by this worker. A CSV is parsed with the types its upload
    profile found, so the worker sees the columns as the service checked them."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    async def fetch() -> bytes:
        store = create_artifact_store(StorageSettings.model_validate(spec["storage"]))
        try:
            return await store.read_bytes(source["key"])
        finally:
            await store.close()

    columns = [*spec["features"], spec["target"]]
    data = io.BytesIO(asyncio.run(fetch()))
    if source["format"] == "parquet":
        return pq.read_table(data, columns=columns).to_pandas()
    types = {}
    for name, alias in (source.get("column_types") or {}).items():
        try:
            types[name] = pa.type_for_alias(alias)
        except ValueError:  # a type with parameters (timestamps): let Arrow infer it
            continue
    options = pacsv.ConvertOptions(column_types=types, include_columns=columns, strings_can_be_null=True)
    return pacsv.read_csv(data, convert_options=options).to_pandas()


def read_table(spec: dict[str, Any]) -> Any:
    """The training dataset's columns."""
    source = {
        "key": spec["dataset_key"],
        "format": spec["dataset_format"],
        "column_types": spec.get("column_types"),
    }
    return read_dataset(spec, source)


@dataclass
class Split:
    """Training and validation rows: raw feature frames (numbers float64, strings objects), targets as
    class codes (classification) or floats, and the class labels in code order."""

    train: Any
    val: Any
    y_train: Any
    y_val: Any
    classes: list[Any] | None


def split(spec: dict[str, Any], task: Task) -> Split:
    """The validation dataset when the job names one, else a seeded (stratified) share of the rows."""
    from sklearn.model_selection import train_test_split

    target, features, strings = spec["target"], spec["features"], spec.get("string_features") or []
    import pandas as pd  # type: ignore[import-untyped]

    frame = read_table(spec)
    missing = frame[target].isna()
    if missing.any():  # else no copy of what may be a few hundred MB
        frame = frame[~missing].reset_index(drop=True)
    X = encoding.as_frame(frame, features, strings)
    classes: list[Any] | None = None
    if task is Task.CLASSIFICATION:
        codes, uniques = pd.factorize(frame[target], sort=True)  # in C, for any label type
        classes = list(uniques.tolist())
        if len(classes) < 2:
            raise ValueError(f"target {target!r} has a single class: nothing to learn")
        y = codes.astype(np.int64)
    else:
        y = frame[target].to_numpy().astype(np.float64)
    validation = spec.get("validation_dataset")
    if validation:
        other = read_dataset(spec, validation)
        other = other[other[target].notna()].reset_index(drop=True)
        if other.empty:
            raise ValueError("the validation dataset holds no rows with a target value")
        return Split(
            X, encoding.as_frame(other, features, strings), y, _codes(other[target], classes), classes
        )
    stratify = None
    if task is Task.CLASSIFICATION and np.bincount(y).min() >= 2:
        stratify = y
    rows = np.arange(len(X))
    train_rows, val_rows = train_test_split(
        rows, test_size=spec["validation_fraction"], random_state=spec.get("seed", 0), stratify=stratify
    )
    return Split(X.iloc[train_rows], X.iloc[val_rows], y[train_rows], y[val_rows], classes)


def _codes(values: Any, classes: list[Any] | None) -> Any:
    if classes is None:
        return values.to_numpy().astype(np.float64)
    labels = values.tolist()
    unknown = sorted({str(label) for label in labels} - {str(c) for c in classes})
    if unknown:
        raise ValueError(
            f"the validation dataset holds classes the training dataset lacks: {unknown[:20]}; "
            "a model cannot predict a class it never saw"
        )
    return np.searchsorted(np.asarray(classes, dtype=object), np.asarray(labels, dtype=object)).astype(
        np.int64
    )


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("search"):  # a search coordinates trials, each of them a run_job (so trials imports us)
        from mlplatform.training.trials import run_search

        return run_search(spec)
    if spec.get("distributed"):  # across every worker, each reading its own Parquet row groups
        from mlplatform.training.distributed import run_distributed

        return run_distributed(spec)
    reporter = Reporter.for_spec(spec)
    task = Task(spec["task"])
    clock = time.perf_counter()
    data = split(spec, task)
    timings = {"read": time.perf_counter() - clock}
    clock = time.perf_counter()
    classes = data.classes
    if task is Task.CLASSIFICATION and len(set(data.y_train.tolist())) < 2:
        raise ValueError("the training split holds a single class: use a larger dataset")
    library = ALGORITHMS[spec["algorithm"]].library
    sklearn_labels = library == "sklearn" and classes is not None
    y_fit, y_check = data.y_train, data.y_val
    if sklearn_labels:  # scikit-learn keeps the labels themselves (`classes_`) in the saved model
        y_fit, y_check = np.asarray(classes)[data.y_train], np.asarray(classes)[data.y_val]
    strings = spec.get("string_features") or []
    try:
        if library == "sklearn" and strings:
            encoder = encoding.one_hot_encoder(spec["features"], strings).fit(data.train)
            X_train, X_val = encoder.transform(data.train), encoder.transform(data.val)
            model = encoding.pipeline(encoder, fit(spec, task, reporter, X_train, y_fit, X_val, y_check))
            X_val = data.val
        elif strings:  # XGBoost and LightGBM: their own categorical support on pandas categories
            X_train, (X_val,) = encoding.categorical(data.train, [data.val], strings)
            if library == "xgboost":
                spec = {**spec, "hyperparameters": {**spec["hyperparameters"], "enable_categorical": True}}
            model = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
        else:
            X_train = data.train.to_numpy(dtype=np.float64)
            X_val = data.val.to_numpy(dtype=np.float64)
            model = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
    except JobCancelled:
        return {"status": "cancelled", "worker": reporter.worker}
    if reporter.cancel_asked():
        return {"status": "cancelled", "worker": reporter.worker}
    timings["fit"], clock = time.perf_counter() - clock, time.perf_counter()
    metrics = evaluate(model, task, X_val, data.y_val, classes if sklearn_labels else None)
    timings["evaluate"], clock = time.perf_counter() - clock, time.perf_counter()
    filename, artifact = save(spec, model)
    reference = reference_sample(data.train, spec.get("seed", 0))
    timings["save"] = time.perf_counter() - clock
    return {
        "status": "succeeded",
        "worker": reporter.worker,
        "artifact": artifact,
        "filename": filename,
        "metrics": metrics,
        "classes": None if sklearn_labels else classes,
        "reference": reference,
        "timings": timings,
    }


def reference_sample(train: Any, seed: int) -> bytes | None:
    """Up to REFERENCE_ROWS training rows of the raw features, as Parquet (for drift monitoring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(train) < MIN_REFERENCE_ROWS:
        return None
    sample = train.sample(n=min(REFERENCE_ROWS, len(train)), random_state=seed)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(sample, preserve_index=False), buffer)
    return buffer.getvalue()


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
