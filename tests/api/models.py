"""Helpers for API tests that register and use models: backends, uploads, reference artifacts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlplatform import db
from mlplatform.formats import ArtifactFormat
from mlplatform.settings import DatabaseSettings
from tests import fixtures_models as fm


@dataclass(frozen=True)
class Reference:
    """A trained model, its artifact on disk and the metadata to upload with it."""

    label: str
    model: Any
    X: np.ndarray
    path: Path
    metadata: dict[str, Any]
    framework: str
    task: str


def _write(
    folder: Path, label: str, trained: fm.Trained, fmt: ArtifactFormat
) -> tuple[Any, np.ndarray, Path]:
    model, X, _ = trained
    target = folder / label
    target.mkdir(parents=True, exist_ok=True)
    return model, X, fm.write_artifact(model, fmt, target)


FEATURES = [f"f{i}" for i in range(fm.N_FEATURES)]

# label → (trainer, format, framework, task)
REFERENCES: dict[str, tuple[Callable[[], fm.Trained], ArtifactFormat, str, str]] = {
    "sklearn-forest-skops": (fm.train_sklearn_classifier, ArtifactFormat.SKOPS, "sklearn", "classification"),
    "sklearn-pipeline-skops": (fm.train_sklearn_pipeline, ArtifactFormat.SKOPS, "sklearn", "classification"),
    "sklearn-regressor-skops": (fm.train_sklearn_regressor, ArtifactFormat.SKOPS, "sklearn", "regression"),
    "xgboost-ubj": (fm.train_xgboost_classifier, ArtifactFormat.XGBOOST_UBJ, "xgboost", "classification"),
    "xgboost-json-multiclass": (
        lambda: fm.train_xgboost_classifier(3),
        ArtifactFormat.XGBOOST_JSON,
        "xgboost",
        "classification",
    ),
    "xgboost-regressor-ubj": (
        fm.train_xgboost_regressor,
        ArtifactFormat.XGBOOST_UBJ,
        "xgboost",
        "regression",
    ),
    "lightgbm-text": (
        fm.train_lightgbm_classifier,
        ArtifactFormat.LIGHTGBM_TEXT,
        "lightgbm",
        "classification",
    ),
    "lightgbm-regressor-text": (
        fm.train_lightgbm_regressor,
        ArtifactFormat.LIGHTGBM_TEXT,
        "lightgbm",
        "regression",
    ),
}


def reference(label: str, folder: Path) -> Reference:
    trainer, fmt, framework, task = REFERENCES[label]
    model, X, path = _write(folder, label, trainer(), fmt)
    return Reference(label, model, X, path, {"feature_names": FEATURES}, framework, task)


def onnx_reference(folder: Path) -> Reference:
    model, X, _ = fm.train_sklearn_classifier()
    target = folder / "onnx"
    target.mkdir(parents=True, exist_ok=True)
    path = target / "model.onnx"
    path.write_bytes(fm.to_onnx(model, zipmap=False).SerializeToString())
    return Reference("onnx", model, X, path, {"feature_names": FEATURES}, "onnx", "classification")


def mlflow_reference(folder: Path) -> Reference:
    model, X, _ = fm.train_sklearn_classifier()
    target = folder / "mlflow"
    target.mkdir(parents=True, exist_ok=True)
    inner = fm.write_artifact(model, ArtifactFormat.SKOPS, target)
    path = fm.write_mlflow_zip(inner, "sklearn", target, serialization_format="skops")
    return Reference("mlflow", model, X, path, {"feature_names": FEATURES}, "sklearn", "classification")


def expected(ref: Reference) -> tuple[np.ndarray, np.ndarray | None]:
    """The library's own predictions (and probabilities for classifiers) on `ref.X`."""
    labels = np.asarray(ref.model.predict(ref.X))
    if ref.task == "classification" and hasattr(ref.model, "predict_proba"):
        return labels, np.asarray(ref.model.predict_proba(ref.X))
    return labels, None


async def upload(
    client: httpx.AsyncClient,
    name: str,
    path: Path,
    metadata: dict[str, Any] | None = None,
    *,
    expect: int = 201,
) -> dict[str, Any]:
    files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
    data = {"metadata": json.dumps(metadata or {})}
    response = await client.post(f"/api/ml/models/{name}/versions", files=files, data=data)
    assert response.status_code == expect, response.text
    return dict(response.json())


async def migrate(url: str) -> None:
    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=url))
