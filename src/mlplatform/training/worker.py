"""What runs on a Dask worker: read the dataset from storage, train with progress and cancel, evaluate, save.

`run_job(spec)` receives a plain dict (the storage settings and the dataset's key, never the data) and
returns the saved model's bytes with its metrics and a reference sample of the training features, or
`{"status": "cancelled"}`. It reports progress through a Dask `Variable` and watches a Dask `Event` for a
cancel, so the API process never trains.
"""

from __future__ import annotations

import asyncio
import io
import mmap
import os
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
    """What pyarrow reads: the file itself, memory-mapped, when the artifact store is a folder on this
    machine (the store opened it: no symlink out of its folder), else the object's bytes fetched from the
    store. pyarrow reads a Python file object through Python calls; a mapped file it reads as memory."""
    import pyarrow as pa

    store = create_artifact_store(StorageSettings.model_validate(spec["storage"]))
    local = store.open_local(key)
    if local is not None:
        with local:
            if os.fstat(local.fileno()).st_size == 0:
                return pa.BufferReader(b"")
            mapped = mmap.mmap(local.fileno(), 0, access=mmap.ACCESS_READ)  # outlives the descriptor
        return pa.BufferReader(pa.py_buffer(mapped))
    fetched: list[bytes] = []

    async def fetch() -> None:  # the bytes are kept aside, never a task's result (whose repr could copy it)
        try:
            fetched.append(await store.read_bytes(key))
        finally:
            await store.close()

    asyncio.run(fetch())
    return pa.BufferReader(fetched.pop())


class DatasetReader:
    """One dataset of the job (`source`: its key, format and column types), read from the artifact store
    by this worker: the target column first, then the features. Parquet is decoded a batch of rows at a
    time (Arrow then holds one batch, not the whole table, beside the matrices being filled); a CSV is
    parsed whole, with the types its upload profile found, so the worker sees the columns as the service
    checked them."""

    def __init__(self, spec: dict[str, Any], source: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self.data = _source(spec, source["key"])
        self.parquet: Any = None
        self.table: Any = None
        try:
            if source["format"] == "parquet":
                self.parquet = pq.ParquetFile(self.data)
                self.num_rows = int(self.parquet.metadata.num_rows)
                return
            types = {}
            for name, alias in (source.get("column_types") or {}).items():
                try:
                    types[name] = pa.type_for_alias(alias)
                except ValueError:  # a type with parameters (timestamps): let Arrow infer it
                    continue
            columns = [*spec["features"], spec["target"]]
            options = pacsv.ConvertOptions(
                column_types=types, include_columns=columns, strings_can_be_null=True
            )
            self.table = pacsv.read_csv(self.data, convert_options=options)
            self.num_rows = int(self.table.num_rows)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.table = None
        if self.parquet is not None:
            self.parquet.close()
        self.data.close()

    def columns(self, names: list[str]) -> Any:
        """These columns of every row, as an Arrow table."""
        return self.parquet.read(columns=names) if self.table is None else self.table.select(names)

    def batches(self, names: list[str]) -> Any:
        """These columns, a record batch of at most MATRIX_BLOCK_ROWS × 4 rows at a time, in row order."""
        size = MATRIX_BLOCK_ROWS * 4
        if self.table is None:
            return self.parquet.iter_batches(batch_size=size, columns=names, use_threads=True)
        return self.table.select(names).to_batches(max_chunksize=size)

    def targets(self, target: str) -> tuple[Any, npt.NDArray[np.bool_]]:
        """The target of the rows that have one (pandas), and which rows those are."""
        values = self.columns([target]).column(0).to_pandas()
        kept = ~values.isna().to_numpy()
        if not kept.all():
            values = values[kept].reset_index(drop=True)
        return values, kept


MATRIX_BLOCK_ROWS = 32_768  # rows per step while the columns are laid out as rows (fits in the CPU's caches)
DROPPED, TRAIN, HELD_OUT = 0, 1, 2  # what becomes of each row of a dataset


def numeric_matrices(
    batches: Any, features: list[str], roles: npt.NDArray[np.int8]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Number and boolean columns as two C-ordered float64 matrices (nulls NaN): the rows whose role is
    TRAIN in the first, HELD_OUT in the second, each in row order (DROPPED rows in neither). Built from
    Arrow record batches a block of rows at a time, each block laid out as rows in a small buffer and then
    copied to its matrix: no pandas frame, no matrix of every row to split afterwards (one copy of the data,
    where a frame and a split took three; on a fresh worker each copy is also memory the system must hand
    over page by page), and the layout every library here trains on without copying again."""
    width = len(features)
    train = np.empty((int(np.count_nonzero(roles == TRAIN)), width), dtype=np.float64)
    val = np.empty((int(np.count_nonzero(roles == HELD_OUT)), width), dtype=np.float64)
    block = np.empty((min(MATRIX_BLOCK_ROWS, max(len(roles), 1)), width), dtype=np.float64)
    row, filled = 0, {TRAIN: 0, HELD_OUT: 0}
    for batch in batches:
        columns = [_floats(batch.column(i)) for i in range(width)]
        for start in range(0, batch.num_rows, MATRIX_BLOCK_ROWS):
            end = min(start + MATRIX_BLOCK_ROWS, batch.num_rows)
            rows = block[: end - start]
            np.stack([column[start:end] for column in columns], axis=1, out=rows)
            role = roles[row + start : row + end]
            for wanted, matrix in ((TRAIN, train), (HELD_OUT, val)):
                chosen = role == wanted
                count = int(np.count_nonzero(chosen))
                at = filled[wanted]
                np.compress(chosen, rows, axis=0, out=matrix[at : at + count])
                filled[wanted] = at + count
        row += batch.num_rows
    if row != len(roles):
        raise ValueError(f"the dataset changed while it was read: {row} rows, {len(roles)} expected")
    return train, val


def _floats(array: Any) -> npt.NDArray[np.float64]:
    import pyarrow as pa

    if array.type != pa.float64():
        array = array.cast(pa.float64())
    return np.asarray(array.to_numpy(zero_copy_only=False))  # float64 without nulls: the Arrow buffer itself


def held_out_rows(y: npt.NDArray[Any], fraction: float, seed: int, classes: bool) -> npt.NDArray[np.bool_]:
    """The validation rows as a mask: the rows scikit-learn's `train_test_split` holds out with this
    fraction and seed (stratified when every class has two rows or more), kept in the dataset's order."""
    from sklearn.model_selection import train_test_split

    stratify = None
    if classes and np.bincount(y).min() >= 2:
        stratify = y
    _, val_rows = train_test_split(
        np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify
    )
    held_out = np.zeros(len(y), dtype=bool)
    held_out[val_rows] = True
    return held_out


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


def split(spec: dict[str, Any], task: Task) -> Split:
    """The validation dataset when the job names one, else a seeded (stratified) share of the rows. Rows
    without a target are left out; the rest keep the dataset's order."""
    import pandas as pd  # type: ignore[import-untyped]

    target, features, strings = spec["target"], spec["features"], spec.get("string_features") or []
    source = {
        "key": spec["dataset_key"],
        "format": spec["dataset_format"],
        "column_types": spec.get("column_types"),
    }
    validation = spec.get("validation_dataset")
    with DatasetReader(spec, source) as reader:
        labels, kept = reader.targets(target)
        classes: list[Any] | None = None
        if task is Task.CLASSIFICATION:
            codes, uniques = pd.factorize(labels, sort=True)  # in C, for any label type
            classes = list(uniques.tolist())
            if len(classes) < 2:
                raise ValueError(f"target {target!r} has a single class: nothing to learn")
            y = codes.astype(np.int64)
        else:
            y = labels.to_numpy().astype(np.float64)
        del labels
        if validation:
            held_out = np.zeros(len(y), dtype=bool)
        else:
            held_out = held_out_rows(y, spec["validation_fraction"], spec.get("seed", 0), classes is not None)
        roles = np.full(reader.num_rows, DROPPED, dtype=np.int8)
        roles[kept] = np.where(held_out, HELD_OUT, TRAIN)
        X_train, X_val = _features(reader, features, strings, roles)
    if not validation:
        return Split(X_train, X_val, y[~held_out], y[held_out], classes)
    with DatasetReader(spec, validation) as reader:
        other_labels, other_kept = reader.targets(target)
        if not other_kept.any():
            raise ValueError("the validation dataset holds no rows with a target value")
        roles = np.where(other_kept, HELD_OUT, DROPPED).astype(np.int8)
        _, X_val = _features(reader, features, strings, roles)
    return Split(X_train, X_val, y, _codes(other_labels, classes), classes)


def _features(
    reader: DatasetReader, features: list[str], strings: list[str], roles: npt.NDArray[np.int8]
) -> Any:
    """Training and held-out rows: float64 matrices when every feature is a number, else frames."""
    if not strings:
        return numeric_matrices(reader.batches(features), features, roles)
    frame = encoding.as_frame(reader.columns(features).to_pandas(), features, strings)
    return (
        frame[roles == TRAIN].reset_index(drop=True),
        frame[roles == HELD_OUT].reset_index(drop=True),
    )


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
            fitted = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
            fitted.model = encoding.pipeline(encoder, fitted.model)
            X_val = data.val
        elif strings:  # XGBoost and LightGBM: their own categorical support on pandas categories
            X_train, (X_val,) = encoding.categorical(data.train, [data.val], strings)
            if library == "xgboost":
                spec = {**spec, "hyperparameters": {**spec["hyperparameters"], "enable_categorical": True}}
            fitted = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
        else:  # every feature a number: the split is float64 matrices already
            X_train, X_val = data.train, data.val
            fitted = fit(spec, task, reporter, X_train, y_fit, X_val, y_check)
    except JobCancelled:
        return {"status": "cancelled", "worker": reporter.worker}
    if reporter.cancel_asked():
        return {"status": "cancelled", "worker": reporter.worker}
    timings["fit"], clock = time.perf_counter() - clock, time.perf_counter()
    model = fitted.model
    labels = classes if sklearn_labels else None
    metrics = evaluate(model, task, X_val, data.y_val, labels, fitted.validation)
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
