"""Keras `.keras` models through the registry and serving (the `tensorflow` extra, installed by make test)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import AppFactory
from tests.api.models import FEATURES, reference, upload
from tests.fixtures_models import classification_data, regression_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402  (the tensorflow extra: make test installs it, so a missing extra fails here)

# TensorFlow 2.21's tensors predate NumPy 2's `copy=` protocol: np.array(tensor) warns, in training and
# in keras.ops.convert_to_numpy alike.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def classifier(path: Path) -> tuple[object, np.ndarray]:
    X, y = classification_data(3)
    model = keras.Sequential(
        [
            keras.Input((len(FEATURES),)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=3, verbose=0)
    model.save(path)
    return model, X


def regressor(path: Path) -> tuple[object, np.ndarray]:
    X, y = regression_data()
    model = keras.Sequential([keras.Input((len(FEATURES),)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(X, y, epochs=2, verbose=0)
    model.save(path)
    return model, X


async def test_keras_models_register_and_predict_like_keras(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    model, X = classifier(tmp_path / "classifier.keras")
    meta = {"feature_names": FEATURES, "task": "classification", "classes": [0, 1, 2]}
    created = await upload(client, "nn", tmp_path / "classifier.keras", meta)
    assert (created["framework"], created["task"], created["classes"]) == (
        "keras",
        "classification",
        [0, 1, 2],
    )
    expected = np.asarray(model(X[:5].astype(np.float32)))  # type: ignore[operator]
    for row, probabilities in zip(X[:5], expected, strict=True):
        answer = (await client.post("/api/ml/predict", json={"model": "nn", "features": row.tolist()})).json()
        assert answer["prediction"] == int(np.argmax(probabilities))
        got = [answer["probabilities"][str(c)] for c in range(3)]
        np.testing.assert_allclose(got, probabilities, atol=1e-5)

    model, X = regressor(tmp_path / "regressor.keras")
    await upload(
        client, "nn-reg", tmp_path / "regressor.keras", {"feature_names": FEATURES, "task": "regression"}
    )
    batch = await client.post("/api/ml/predict/batch", json={"model": "nn-reg", "instances": X[:4].tolist()})
    values = [p["prediction"] for p in batch.json()["predictions"]]
    np.testing.assert_allclose(values, np.asarray(model(X[:4].astype(np.float32))).reshape(-1), rtol=1e-5)  # type: ignore[operator]


async def test_keras_models_with_code_are_refused(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    model = keras.Sequential(
        [keras.Input((len(FEATURES),)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(1)]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    refused = await upload(
        client, "evil-nn", path, {"feature_names": FEATURES, "task": "regression"}, expect=415
    )
    assert "Lambda" in refused["error"]["message"]


async def test_a_slower_canary_is_rolled_back_by_itself_on_its_p95_latency(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A Keras network as the canary of a small XGBoost model: the same answers' shape, but each request
    runs through TensorFlow and takes several times as long. The latency guard rolls it back."""
    client, _ = await make_app(ml={"experiments": {"supervise-seconds": 0.1}})
    ref = reference("xgboost-ubj", tmp_path)
    await upload(client, "churn", ref.path, ref.metadata)
    X, y = classification_data(2)
    network = keras.Sequential(
        [
            keras.Input((len(FEATURES),)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    network.fit(X, y, epochs=1, verbose=0)
    network.save(tmp_path / "net.keras")
    meta = {"feature_names": FEATURES, "task": "classification", "classes": [0, 1]}
    await upload(client, "churn", tmp_path / "net.keras", meta)
    for version in ("1", "2"):  # both loaded before the clock starts: a first load is not a slow answer
        body = {"model": f"churn/{version}", "features": X[0].tolist()}
        assert (await client.post("/api/ml/predict", json=body)).status_code == 200
    body = {
        "name": "network canary",
        "model": "churn",
        "type": "canary",
        "variants": [{"name": "stable", "version": "1"}, {"name": "next", "version": "2"}],
        "metric": "latency_p95",
        "canary": {
            "steps": [50, 100],
            "step_min_samples": 100_000,
            "step_min_seconds": 0,
            "max_degradation": 0.5,
        },
    }
    created = await client.post("/api/ml/experiments", json=body)
    assert created.status_code == 201, created.text
    experiment = created.json()
    latencies: dict[str, list[float]] = {"stable": [], "next": []}
    async with asyncio.timeout(60):
        i = 0
        while (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()["state"] == "running":
            response = await client.post(
                "/api/ml/predict",
                json={"model": "churn", "features": X[i % len(X)].tolist()},
                headers={"X-Request-ID": f"r-{i}"},
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            latencies[answer["variant"]].append(answer["latency_ms"])
            i += 1
    ended = (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()
    assert ended["state"] == "rolled_back" and ended["ended_by"] == "experiment supervisor"
    assert "p95 latency" in ended["reason"], ended["reason"]
    assert [v["weight"] for v in ended["variants"]] == [100, 0]
    assert np.percentile(latencies["next"], 95) > 1.5 * np.percentile(latencies["stable"], 95)
