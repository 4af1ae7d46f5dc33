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
import numpy.typing as npt

from mlplatform.formats.base import Task
from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training import encoding
from mlplatform.training.algorithms import ALGORITHMS
from mlplatform.training.fitting import evaluate, fit
from mlplatform.training.progress import JobCancelled, Reporter

REFERENCE_ROWS = 5_000  # training rows kept with the version as its drift reference
MIN_REFERENCE_ROWS = 10  # monitoring compares nothing smaller; fewer training rows keep no reference


def _source(spec: dict[str, Any], key: str) -> Any:
    """What pyarrow reads: the file itself when the artifact store is a folder on this machine, else the
    object's bytes fetched from the store."""
    import pyarrow as pa

    store = create_artifact_store(StorageSettings.model_validate(spec["storage"]))
    local = store.open_local(key)
    if local is not None:
        return local
    fetched: list[bytes] = []

    async def fetch() -> None:  # the bytes are kept aside, never a task's result (whose repr could copy it)
        try:
            fetched.append(await store.read_bytes(key))
        finally:
            await store.close()

    asyncio.run(fetch())
    return pa.BufferReader(fetched.pop())


def read_arrow(spec: dict[str, Any], source: dict[str, Any]) -> Any:
    """The job's columns of one dataset (`source`: its key, format and column types) as an Arrow table,
    read from the artifact store by this worker. A CSV is parsed with the types its upload profile found,
    so the worker sees the columns as the service checked them."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = [*spec["features"], spec["target"]]
    data = _source(spec, source["key"])
    try:
        if source["format"] == "parquet":
            return pq.read_table(data, columns=columns)
        types = {}
        for name, alias in (source.get("column_types") or {}).items():
            try:
                types[name] = pa.type_for_alias(alias)
            except ValueError:  # a type with parameters (timestamps): let Arrow infer it
                continue
        options = pacsv.ConvertOptions(column_types=types, include_columns=columns, strings_can_be_null=True)
        return pacsv.read_csv(data, convert_options=options)
    finally:
        data.close()


MATRIX_BLOCK_ROWS = 32_768  # rows per step while the columns are laid out as rows (fits in the CPU's caches)


def numeric_matrix(table: Any, features: list[str]) -> npt.NDArray[np.float64]:
    """Number and boolean columns as one C-ordered float64 matrix (nulls NaN), built straight from Arrow a
    block of rows at a time: no pandas frame (one copy of the data instead of three), and the layout every
    library here trains on without copying again. Filled column by column it took 0.8 s for 1M × 30."""
    import pyarrow as pa

    columns = [table.column(name).cast(pa.float64()).to_numpy() for name in features]
    matrix = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for start in range(0, table.num_rows, MATRIX_BLOCK_ROWS):
        end = start + MATRIX_BLOCK_ROWS
        np.stack([column[start:end] for column in columns], axis=1, out=matrix[start:end])
    return matrix


@dataclass
class Split:
    """Training and validation rows: the features as a float64 matrix when every feature is a number, else
    raw feature frames (numbers float64, strings objects); targets as class codes (classification) or
    floats, and the class labels in code order."""

    train: Any
    val: Any
    y_train: Any
    y_val: Any
    classes: list[Any] | None


def _targets(table: Any, target: str) -> tuple[Any, Any]:
    """The table without the rows whose target is missing, and that target column (pandas)."""
    import pyarrow as pa

    values = table.column(target).to_pandas()
    missing = values.isna().to_numpy()
    if missing.any():  # else no copy of what may be a few hundred MB
        table = table.filter(pa.array(~missing))
        values = values[~missing].reset_index(drop=True)
    return table, values


def _features(table: Any, features: list[str], strings: list[str]) -> Any:
    if strings:
        return encoding.as_frame(table.to_pandas(), features, strings)
    return numeric_matrix(table, features)


def split(spec: dict[str, Any], task: Task) -> Split:
    """The validation dataset when the job names one, else a seeded (stratified) share of the rows."""
    from sklearn.model_selection import train_test_split

    target, features, strings = spec["target"], spec["features"], spec.get("string_features") or []
    import pandas as pd  # type: ignore[import-untyped]

    source = {
        "key": spec["dataset_key"],
        "format": spec["dataset_format"],
        "column_types": spec.get("column_types"),
    }
    table, labels = _targets(read_arrow(spec, source), target)
    X = _features(table, features, strings)
    del table
    classes: list[Any] | None = None
    if task is Task.CLASSIFICATION:
        codes, uniques = pd.factorize(labels, sort=True)  # in C, for any label type
        classes = list(uniques.tolist())
        if len(classes) < 2:
            raise ValueError(f"target {target!r} has a single class: nothing to learn")
        y = codes.astype(np.int64)
    else:
        y = labels.to_numpy().astype(np.float64)
    validation = spec.get("validation_dataset")
    if validation:
        other, other_labels = _targets(read_arrow(spec, validation), target)
        if not other.num_rows:
            raise ValueError("the validation dataset holds no rows with a target value")
        return Split(X, _features(other, features, strings), y, _codes(other_labels, classes), classes)
    stratify = None
    if task is Task.CLASSIFICATION and np.bincount(y).min() >= 2:
        stratify = y
    rows = np.arange(len(y))
    train_rows, val_rows = train_test_split(
        rows, test_size=spec["validation_fraction"], random_state=spec.get("seed", 0), stratify=stratify
    )
    if isinstance(X, np.ndarray):
        return Split(X[train_rows], X[val_rows], y[train_rows], y[val_rows], classes)
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
        else:  # every feature a number: the split is float64 matrices already
            X_train, X_val = data.train, data.val
            model = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
    except JobCancelled:
        return {"status": "cancelled", "worker": reporter.worker}
    if reporter.cancel_asked():
        return {"status": "cancelled", "worker": reporter.worker}
    timings["fit"], clock = time.perf_counter() - clock, time.perf_counter()
    metrics = evaluate(model, task, X_val, data.y_val, classes if sklearn_labels else None)
    timings["evaluate"], clock = time.perf_counter() - clock, time.perf_counter()
    filename, artifact = save(spec, model)
    reference = reference_sample(data.train, spec["features"], spec.get("seed", 0))
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


def reference_sample(train: Any, features: list[str], seed: int) -> bytes | None:
    """Up to REFERENCE_ROWS training rows of the raw features (a frame, or a matrix of `features`), as
    Parquet (for drift monitoring)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(train) < MIN_REFERENCE_ROWS:
        return None
    if isinstance(train, np.ndarray):
        train = pd.DataFrame(train, columns=features, copy=False)
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
