"""Keras `.keras` models through the registry and serving (the `tensorflow` extra, installed by make test)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import AppFactory
from tests.api.models import FEATURES, upload
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
