"""How a training worker reads a dataset: Arrow straight into float64 matrices for numeric features (nulls
NaN, missing targets dropped, the rows of the seeded stratified split scikit-learn makes, in the dataset's
order), from a local folder in place and from S3 through its bytes, Parquet and CSV; string features keep
their frame."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.model_selection import train_test_split

from mlplatform.formats.base import Task
from mlplatform.settings import StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training import worker

ROWS = 70_001  # more than two of numeric_matrices' blocks, and not a multiple of one


def dataset() -> pa.Table:
    rng = np.random.default_rng(4)
    floats = rng.normal(size=ROWS)
    floats[::7] = np.nan
    ints = pa.array(rng.integers(-5, 5, size=ROWS), mask=np.arange(ROWS) % 11 == 0)  # nulls in ints
    label = pa.array(np.where(rng.random(ROWS) < 0.3, "yes", "no"), mask=np.arange(ROWS) % 13 == 0)
    return pa.table(
        {
            "x": floats,
            "count": ints,
            "flag": pa.array(rng.random(ROWS) < 0.5),
            "city": pa.array(rng.choice(["paris", "oslo", None], size=ROWS)),
            "label": label,
        }
    )


def store_parquet(url: str, credentials: dict[str, str], table: pa.Table) -> dict[str, Any]:
    settings = StorageSettings.model_validate({"url": url, **credentials})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=20_000)  # several row groups: chunked columns

    async def put() -> None:
        store = create_artifact_store(settings)
        try:
            await store.put("datasets/d/data.parquet", buffer.getvalue())
        finally:
            await store.close()

    asyncio.run(put())
    return {
        "storage": {"url": url, **credentials},
        "dataset_key": "datasets/d/data.parquet",
        "dataset_format": "parquet",
        "target": "label",
        "validation_fraction": 0.25,
        "seed": 3,
    }


def expected_split(table: pa.Table, features: list[str]) -> tuple[np.ndarray, ...]:
    frame = table.to_pandas()
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    X = frame[features].astype(np.float64).to_numpy()
    y = (frame["label"] == "yes").to_numpy().astype(np.int64)  # codes in sorted order: no, yes
    train, val = train_test_split(np.arange(len(y)), test_size=0.25, random_state=3, stratify=y)
    train, val = np.sort(train), np.sort(val)  # the same rows, in the dataset's order
    return X[train], X[val], y[train], y[val]


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_numeric_features_become_the_split_scikit_learn_makes(
    where: str, file_url: str, request: pytest.FixtureRequest
) -> None:
    credentials: dict[str, str] = {}
    url = file_url
    if where == "s3":
        url = request.getfixturevalue("s3_url")
        credentials = request.getfixturevalue("s3_credentials")
    table = dataset()
    features = ["x", "count", "flag"]
    spec = {**store_parquet(url, credentials, table), "features": features}
    found = worker.split(spec, Task.CLASSIFICATION)
    X_train, X_val, y_train, y_val = expected_split(table, features)
    assert isinstance(found.train, np.ndarray) and found.train.flags.c_contiguous
    assert found.train.dtype == np.float64
    np.testing.assert_array_equal(found.train, X_train)  # NaN where the source had nulls or NaN
    np.testing.assert_array_equal(found.val, X_val)
    np.testing.assert_array_equal(found.y_train, y_train)
    np.testing.assert_array_equal(found.y_val, y_val)
    assert found.classes == ["no", "yes"]
    assert np.isnan(found.train[:, 1]).any() and np.isnan(found.train[:, 0]).any()


def test_a_csv_dataset_gives_the_same_split(file_url: str) -> None:
    import pyarrow.csv as pacsv

    table = dataset()
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    asyncio.run(_put(file_url, "datasets/c/data.csv", buffer.getvalue()))
    features = ["x", "count", "flag"]
    spec = {
        **store_parquet(file_url, {}, table),
        "dataset_key": "datasets/c/data.csv",
        "dataset_format": "csv",
        "column_types": {"x": "double", "count": "int64", "flag": "bool", "label": "string"},
        "features": features,
    }
    found = worker.split(spec, Task.CLASSIFICATION)
    for got, want in zip(
        (found.train, found.val, found.y_train, found.y_val), expected_split(table, features), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_string_features_keep_a_frame_and_the_reference_names_the_columns(file_url: str) -> None:
    table = dataset()
    spec = {
        **store_parquet(file_url, {}, table),
        "features": ["x", "city"],
        "string_features": ["city"],
    }
    found = worker.split(spec, Task.CLASSIFICATION)
    assert isinstance(found.train, pd.DataFrame)
    assert list(found.train.columns) == ["x", "city"]
    assert found.train["city"].isna().any() and found.train["city"].dtype == object

    numeric = worker.split({**spec, "features": ["x", "count"], "string_features": []}, Task.CLASSIFICATION)
    sample = pq.read_table(io.BytesIO(worker.reference_sample(numeric.train, ["x", "count"], 0) or b""))
    assert sample.column_names == ["x", "count"] and sample.num_rows == worker.REFERENCE_ROWS


def test_a_validation_dataset_is_read_the_same_way(file_url: str) -> None:
    table = dataset()
    spec = {**store_parquet(file_url, {}, table), "features": ["x", "count"]}
    other = table.slice(0, 500)
    buffer = io.BytesIO()
    pq.write_table(other, buffer)
    asyncio.run(_put(file_url, "datasets/v/data.parquet", buffer.getvalue()))
    spec["validation_dataset"] = {"key": "datasets/v/data.parquet", "format": "parquet"}
    found = worker.split(spec, Task.CLASSIFICATION)
    kept = other.to_pandas()
    kept = kept[kept["label"].notna()]
    np.testing.assert_array_equal(found.val, kept[["x", "count"]].astype(np.float64).to_numpy())
    assert len(found.train) == table.filter(pc.is_valid(table["label"])).num_rows


async def _put(url: str, key: str, data: bytes) -> None:
    store = create_artifact_store(StorageSettings.model_validate({"url": url}))
    try:
        await store.put(key, data)
    finally:
        await store.close()
