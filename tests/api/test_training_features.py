"""Training on string (categorical) features, on a separate validation dataset, and the training rows kept as
the version's drift reference: through the HTTP API on a real Dask cluster."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.api.conftest import AppFactory
from tests.api.test_training_api import TERMINAL, scheduler, wait_for

__all__ = ["scheduler"]  # the module-scoped LocalCluster fixture, shared with the other training tests
CITIES = ["lyon", "oslo", "paris"]
# Known categories, one the training rows never held, and a missing one (null in JSON).
QUERIES: list[dict[str, Any]] = [
    {"x1": 0.2, "x2": -0.4, "city": "oslo"},
    {"x1": -0.3, "x2": 0.1, "city": "paris"},
    {"x1": 1.1, "x2": 0.5, "city": "lyon"},
    {"x1": 0.2, "x2": -0.4, "city": "tokyo"},
    {"x1": -0.8, "x2": 0.3, "city": None},
]


def frame(rows: int, seed: int) -> pd.DataFrame:
    """`label` depends on the city as much as on x1, so a model that ignored the string would show it."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows).round(6), rng.normal(size=rows).round(6)
    city = rng.choice(CITIES, rows).astype(object)
    city[rng.random(rows) < 0.05] = None
    score = x1 + np.where(city == "oslo", 1.5, np.where(city == "paris", -1.5, 0.0))
    label = np.where(score + rng.normal(scale=0.3, size=rows) > 0, "yes", "no")
    price = 10 + 2 * x1 + np.where(city == "oslo", 5.0, 0.0) + rng.normal(scale=0.1, size=rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "city": city, "label": label, "price": price.round(6)})


async def upload(client: httpx.AsyncClient, data: pd.DataFrame, name: str = "visits") -> str:
    content = data.to_csv(index=False).encode()
    response = await client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def trained(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/ml/training-jobs", json=body)
    assert response.status_code == 202, response.text
    job = await wait_for(client, response.json()["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    return dict(job)


def body(dataset: str, algorithm: str, **extra: Any) -> dict[str, Any]:
    hyperparameters = {} if algorithm == "logistic_regression" else {"n_estimators": 15}
    return {
        "model": "visits",
        "dataset": dataset,
        "target": "label",
        "features": ["x1", "x2", "city"],
        "algorithm": algorithm,
        "hyperparameters": hyperparameters,
        **extra,
    }


def library_probabilities(framework: str, artifact: bytes, tmp_path: Path, rows: pd.DataFrame) -> Any:
    """The saved model's own library on the raw columns (pandas categories for the boosters, a category
    the model never saw given as missing), each class's probability in the version's class order."""
    if framework == "sklearn":
        import skops.io

        path = tmp_path / "model.skops"
        path.write_bytes(artifact)
        model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
        return model.predict_proba(rows)
    if framework == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(artifact))
        levels = booster.get_categories(export_to_arrow=True).to_arrow()[2][1].to_pylist()
        data = rows.assign(city=pd.Categorical(rows.city.where(rows.city.isin(levels)), categories=levels))
        positive = booster.inplace_predict(data)
    else:
        import lightgbm

        booster = lightgbm.Booster(model_str=artifact.decode())
        levels = booster.pandas_categorical[0]
        data = rows.assign(city=pd.Categorical(rows.city.where(rows.city.isin(levels)), categories=levels))
        positive = booster.predict(data)
    return np.column_stack([1 - positive, positive])


@pytest.mark.parametrize("algorithm", ["random_forest", "logistic_regression", "xgboost", "lightgbm"])
async def test_string_features_train_and_predict_from_the_raw_values_as_the_library_does(
    make_app: AppFactory, scheduler: str, tmp_path: Path, algorithm: str
) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler})
    dataset = await upload(client, frame(400, seed=0))
    job = await trained(client, body(dataset, algorithm))
    assert job["metrics"]["accuracy"] > 0.8, job["metrics"]  # the city carries half the signal

    version = (await client.get("/api/ml/models/visits/versions/1")).json()
    assert {f["name"]: f["type"] for f in version["features"]} == {
        "x1": "float",
        "x2": "float",
        "city": "string",
    }
    assert version["classes"] == ["no", "yes"]
    assert version["artifact"]["format"] == {"sklearn": "skops", "xgboost": "xgboost-ubj"}.get(
        version["framework"], "lightgbm-text"
    )
    answers = []
    for features in QUERIES:
        response = await client.post("/api/ml/predict", json={"model": "visits", "features": features})
        assert response.status_code == 200, (features, response.text)
        answers.append(response.json())
    batch = await client.post("/api/ml/predict/batch", json={"model": "visits", "instances": QUERIES})
    assert batch.status_code == 200, batch.text

    artifact = (await client.get("/api/ml/models/visits/versions/1/artifact")).content
    expected = library_probabilities(version["framework"], artifact, tmp_path, pd.DataFrame(QUERIES))
    got = np.array([[a["probabilities"]["no"], a["probabilities"]["yes"]] for a in answers])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [a["prediction"] for a in answers] == [["no", "yes"][i] for i in expected.argmax(axis=1)]
    assert [p["prediction"] for p in batch.json()["predictions"]] == [a["prediction"] for a in answers]
    assert answers[0]["prediction"] == "yes" and answers[1]["prediction"] == "no"  # oslo up, paris down

    wrong = await client.post(
        "/api/ml/predict", json={"model": "visits", "features": {"x1": 0.1, "x2": 0.1, "city": 3}}
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["details"][0]["field"] == "features.city"


async def test_a_regression_on_a_string_feature_learns_from_it(make_app: AppFactory, scheduler: str) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler})
    dataset = await upload(client, frame(400, seed=1))
    job = await trained(
        client, body(dataset, "hist_gradient_boosting", target="price", hyperparameters={"max_iter": 30})
    )
    assert job["task"] == "regression" and job["metrics"]["r2"] > 0.9, job["metrics"]
    rows = [{"x1": 0.0, "x2": 0.0, "city": city} for city in ("oslo", "lyon")]
    answer = await client.post("/api/ml/predict/batch", json={"model": "visits", "instances": rows})
    oslo, lyon = (p["prediction"] for p in answer.json()["predictions"])
    assert oslo - lyon == pytest.approx(5.0, abs=1.0)


async def logged(client: httpx.AsyncClient, model: str, count: int) -> None:
    async with asyncio.timeout(15):
        while True:
            found = (await client.get("/api/ml/predictions", params={"model": model, "limit": 10_000})).json()
            if len(found) >= count:
                return
            await asyncio.sleep(0.05)


async def test_the_training_rows_become_the_drift_reference_and_a_drift_check_works(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler})
    dataset = await upload(client, frame(6_500, seed=2))
    await trained(client, body(dataset, "xgboost"))

    reference = (await client.get("/api/ml/models/visits/versions/1/reference")).json()
    assert reference["rows"] == 5_000 and reference["source_rows"] == 5_000  # of the 5,200 training rows
    features = {f["name"]: f for f in reference["features"]}
    assert list(features) == ["x1", "x2", "city"]
    assert features["city"]["kind"] == "categorical" and features["x1"]["kind"] == "numeric"
    assert sorted(features["city"]["histogram"]["labels"]) == CITIES
    assert 0.02 < features["city"]["missing_rate"] < 0.08

    calm = frame(300, seed=3).drop(columns=["label", "price"])
    moved = calm.assign(city="oslo")
    for part in (calm, moved):
        instances = part.replace({np.nan: None}).to_dict(orient="records")
        response = await client.post(
            "/api/ml/predict/batch", json={"model": "visits", "instances": instances}
        )
        assert response.status_code == 200, response.text
    await logged(client, "visits", 600)
    report = await client.post("/api/ml/models/visits/drift-check")
    assert report.status_code == 200, report.text
    assert report.json()["sampled_rows"] == 600 and report.json()["drifted_features"] == ["city"]


async def test_a_validation_dataset_is_validated_on_and_the_whole_training_dataset_trained_on(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler})
    training = await upload(client, frame(300, seed=4))
    held_out = frame(150, seed=5)
    validation = await upload(client, held_out, name="visits-later")
    job = await trained(client, body(training, "random_forest", validation={"dataset": validation}))
    assert job["validation"] == {"fraction": None, "dataset": validation}

    reference = (await client.get("/api/ml/models/visits/versions/1/reference")).json()
    assert reference["rows"] == 300  # no rows held out of the training dataset
    features = held_out.drop(columns=["label", "price"]).replace({np.nan: None}).to_dict(orient="records")
    answer = await client.post("/api/ml/predict/batch", json={"model": "visits", "instances": features})
    predicted = np.array([p["prediction"] for p in answer.json()["predictions"]])
    assert job["metrics"]["accuracy"] == pytest.approx(float(np.mean(predicted == held_out.label)))

    # A class the training rows never hold cannot be validated: the job fails saying so, registering nothing.
    surprising = await upload(client, held_out.assign(label="maybe"), name="visits-odd")
    response = await client.post(
        "/api/ml/training-jobs", json=body(training, "lightgbm", validation={"dataset": surprising})
    )
    failed = await wait_for(client, response.json()["id"], TERMINAL)
    assert failed["state"] == "failed" and "'maybe'" in failed["error"], failed
    assert (await client.get("/api/ml/models/visits")).json()["versions"] == 1


async def bad(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/api/ml/training-jobs", json=body)
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["details"][0]["field"])


async def test_each_bad_validation_dataset_is_422_naming_it_and_queues_nothing(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform = await make_app(jobs={"scheduler": scheduler})
    data = frame(100, seed=6)
    training = await upload(client, data)
    no_target = await upload(client, data.drop(columns=["label"]), name="no-label")
    no_feature = await upload(client, data.drop(columns=["city"]), name="no-city")
    numeric_city = await upload(client, data.assign(city=np.arange(100)), name="numbered")
    numeric_label = await upload(client, data.assign(label=np.arange(100) % 2), name="coded")
    empty_label = await upload(client, data.assign(label=None), name="unlabelled")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"dataset": no_target}, "validation.dataset"),
        ({"dataset": no_feature}, "validation.dataset"),
        ({"dataset": numeric_city}, "validation.dataset"),
        ({"dataset": numeric_label}, "validation.dataset"),
        ({"dataset": empty_label}, "validation.dataset"),
        ({"dataset": "01NOSUCHDATASET"}, "validation.dataset"),
        ({"dataset": training}, "validation.dataset"),
        ({"dataset": no_target, "fraction": 0.3}, "validation"),
        ({"fraction": 0.3, "extra": 1}, "validation.extra"),
    ]
    for validation, field in cases:
        assert await bad(client, body(training, "xgboost", validation=validation)) == field, validation
    assert (await client.get("/api/ml/training-jobs")).json()["total"] == 0
    assert await platform.artifacts.list("models/") == []


async def test_a_feature_that_is_neither_number_nor_string_is_refused_by_name(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler})
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"x1": [0.1, 0.2, 0.3], "when": pa.array([1, 2, 3], pa.timestamp("s")), "label": [0, 1, 0]}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    response = await client.post(
        "/api/ml/datasets", files={"file": ("d.parquet", buffer.getvalue())}, data={"name": "times"}
    )
    assert response.status_code == 201, response.text
    refused = await client.post(
        "/api/ml/training-jobs",
        json={"model": "times", "dataset": response.json()["id"], "target": "label", "algorithm": "xgboost"},
    )
    assert refused.status_code == 422, refused.text
    detail = refused.json()["error"]["details"][0]
    assert detail["field"] == "features" and detail["columns"] == ["when"]
