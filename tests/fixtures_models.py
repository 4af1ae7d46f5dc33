"""Tiny reference models trained in tests, and writers for every artifact format (no model file is committed).

Every trainer returns `(model, X, y)` on a small deterministic dataset whose values are exact in float32, so
ONNX (float32) and the native libraries (float64) take the same tree branches.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mlplatform.formats import ArtifactFormat

N_FEATURES = 4
Array = NDArray[Any]
Trained = tuple[Any, Array, Array]
FILE_SUFFIXES = {
    ArtifactFormat.SKOPS: ".skops",
    ArtifactFormat.XGBOOST_UBJ: ".ubj",
    ArtifactFormat.XGBOOST_JSON: ".json",
    ArtifactFormat.LIGHTGBM_TEXT: ".txt",
    ArtifactFormat.ONNX: ".onnx",
    ArtifactFormat.PICKLE: ".pkl",
}


def classification_data(n_classes: int = 2, *, n_samples: int = 90, seed: int = 0) -> tuple[Array, Array]:
    """A small classification dataset: X float64 (float32-exact), y integer labels 0..n_classes-1."""
    X, y = make_classification(
        n_samples=n_samples,
        n_features=N_FEATURES,
        n_informative=3,
        n_redundant=0,
        n_classes=n_classes,
        random_state=seed,
    )
    return X.astype(np.float32).astype(np.float64), y


def regression_data(*, n_samples: int = 90, seed: int = 0) -> tuple[Array, Array]:
    X, y = make_regression(n_samples=n_samples, n_features=N_FEATURES, noise=0.1, random_state=seed)
    return X.astype(np.float32).astype(np.float64), y


def train_sklearn_classifier(kind: str = "random_forest", *, labels: Sequence[Any] | None = None) -> Trained:
    """A RandomForestClassifier (`kind="random_forest"`) or LogisticRegression (`"logistic"`).

    `labels` renames the classes (e.g. ["cat", "dog"]) so `classes_` holds strings.
    """
    n_classes = len(labels) if labels is not None else 2
    X, y = classification_data(n_classes)
    if labels is not None:
        y = np.asarray(labels)[y]
    if kind == "random_forest":
        model: Any = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    elif kind == "logistic":
        model = LogisticRegression(max_iter=1000)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return model.fit(X, y), X, y


def train_sklearn_pipeline() -> Trained:
    """StandardScaler followed by LogisticRegression, binary."""
    X, y = classification_data(2)
    model: Pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(X, y), X, y


def train_sklearn_regressor() -> Trained:
    X, y = regression_data()
    return GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=0).fit(X, y), X, y


def train_xgboost_classifier(n_classes: int = 2) -> Trained:
    import xgboost

    X, y = classification_data(n_classes)
    model = xgboost.XGBClassifier(n_estimators=4, max_depth=2, random_state=0, n_jobs=1)
    return model.fit(X, y), X, y


def train_xgboost_regressor() -> Trained:
    import xgboost

    X, y = regression_data()
    return xgboost.XGBRegressor(n_estimators=4, max_depth=2, random_state=0, n_jobs=1).fit(X, y), X, y


def train_lightgbm_classifier(n_classes: int = 2) -> Trained:
    import lightgbm

    X, y = classification_data(n_classes)
    model = lightgbm.LGBMClassifier(n_estimators=4, num_leaves=4, min_child_samples=5, verbose=-1, n_jobs=1)
    return model.fit(X, y), X, y


def train_lightgbm_regressor() -> Trained:
    import lightgbm

    X, y = regression_data()
    model = lightgbm.LGBMRegressor(n_estimators=4, num_leaves=4, min_child_samples=5, verbose=-1, n_jobs=1)
    return model.fit(X, y), X, y


def train_keras_classifier(n_classes: int = 3) -> Trained:
    """A small Keras MLP with a softmax output (needs the `tensorflow` extra, whose import takes seconds)."""
    import keras

    X, y = classification_data(n_classes)
    model = keras.Sequential(
        [
            keras.Input((N_FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=1, verbose=0)
    return model, X, y


def to_onnx(model: Any, *, n_features: int = N_FEATURES, zipmap: bool = True) -> Any:
    """The model as an onnx.ModelProto with one float input "input" of shape [None, n_features]."""
    package = type(model).__module__.split(".", 1)[0]
    if package in ("xgboost", "lightgbm"):
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat

        convert = onnxmltools.convert_xgboost if package == "xgboost" else onnxmltools.convert_lightgbm
        extra = {"zipmap": zipmap} if package == "lightgbm" else {}
        return convert(model, initial_types=[("input", MlFloat([None, n_features]))], **extra)
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options: dict[int, dict[str, bool]] | None = None
    if not zipmap and hasattr(model, "classes_"):
        options = {id(model): {"zipmap": False}}
    return skl_to_onnx(model, initial_types=[("input", FloatTensorType([None, n_features]))], options=options)


def write_artifact(model: Any, fmt: ArtifactFormat, folder: Path, *, name: str = "model") -> Path:
    """Save `model` in `fmt` under `folder` the way its library documents, and return the file."""
    path = folder / f"{name}{FILE_SUFFIXES[fmt]}"
    folder.mkdir(parents=True, exist_ok=True)
    if fmt is ArtifactFormat.SKOPS:
        import skops.io

        skops.io.dump(model, path)
    elif fmt in (ArtifactFormat.XGBOOST_UBJ, ArtifactFormat.XGBOOST_JSON):
        model.save_model(path)
    elif fmt is ArtifactFormat.LIGHTGBM_TEXT:
        booster = getattr(model, "booster_", model)
        booster.save_model(path)
    elif fmt is ArtifactFormat.ONNX:
        proto = model if hasattr(model, "SerializeToString") else to_onnx(model)
        path.write_bytes(proto.SerializeToString())
    elif fmt is ArtifactFormat.PICKLE:
        import joblib

        joblib.dump(model, path)
    else:
        raise ValueError(f"no writer for {fmt}")
    return path


def write_zip(path: Path, members: Mapping[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip archive holding exactly `members` (entry name → bytes), names written as given."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


MLFLOW_FLAVOURS: dict[str, dict[str, Any]] = {
    "sklearn": {"pickled_model": "{file}", "sklearn_version": "1.5.0", "code": None},
    "xgboost": {"data": "{file}", "model_class": "xgboost.sklearn.XGBClassifier", "xgb_version": "2.1.0"},
    "lightgbm": {"data": "{file}", "model_class": "lightgbm.basic.Booster", "lgb_version": "4.5.0"},
    "onnx": {"data": "{file}", "onnx_version": "1.16.0", "providers": ["CPUExecutionProvider"]},
}


def write_mlflow_zip(
    model_file: Path,
    flavour: str,
    folder: Path,
    *,
    serialization_format: str | None = None,
    signature: Sequence[tuple[str, str]] | None = None,
    top_folder: str | None = "model",
) -> Path:
    """An MLflow model directory (MLmodel YAML + the model file), zipped as MLflow users zip it.

    `signature` is a list of (column name, MLflow type) pairs; `top_folder=None` puts MLmodel at the root.
    """
    config = {
        key: (value.format(file=model_file.name) if isinstance(value, str) else value)
        for key, value in MLFLOW_FLAVOURS[flavour].items()
    }
    if serialization_format is not None:
        config["serialization_format"] = serialization_format
    spec: dict[str, Any] = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {"loader_module": f"mlflow.{flavour}", "model_path": model_file.name},
            flavour: config,
        },
        "mlflow_version": "2.16.0",
        "model_uuid": "0123456789abcdef",
    }
    if signature is not None:
        columns = [{"name": name, "type": kind, "required": True} for name, kind in signature]
        spec["signature"] = {"inputs": json.dumps(columns), "outputs": json.dumps([{"type": "long"}])}
    prefix = f"{top_folder}/" if top_folder else ""
    members = {
        f"{prefix}MLmodel": yaml.safe_dump(spec).encode(),
        f"{prefix}requirements.txt": b"scikit-learn\n",
        f"{prefix}{model_file.name}": model_file.read_bytes(),
    }
    return write_zip(folder / f"mlflow-{flavour}.zip", members)


class PickleBomb:
    """Unpickling this creates `marker` (an empty file): proof that loading ran code from the artifact."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (os.fspath(self.marker), "w"))


def write_pickle_bomb(marker: Path, path: Path, *, protocol: int | None = None, compress: Any = 0) -> Path:
    """A pickle of `protocol` 0..5, or with `protocol=None` a joblib file (`compress` as in joblib.dump)."""
    if protocol is not None:
        path.write_bytes(pickle.dumps(PickleBomb(marker), protocol=protocol))
    else:
        import joblib

        joblib.dump(PickleBomb(marker), path, compress=compress)
    return path


def linear_onnx(n_features: int = N_FEATURES, *, weight: float = 0.5) -> Any:
    """A hand-built ONNX graph `input @ W + b` (no ai.onnx.ml ops), so the artifact cannot tell its task."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(np.full((n_features, 1), weight, dtype=np.float32), "W")
    b = numpy_helper.from_array(np.array([1.0], dtype=np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["output"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1])],
        [W, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hand")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def keras_config(*, extra_layers: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The config.json of a Keras 3 Sequential model: 4 inputs → Dense(1), plus `extra_layers` at the end."""

    def keras_object(module: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
        return {"module": module, "class_name": class_name, "config": config, "registered_name": None}

    initializer = keras_object("keras.initializers", "GlorotUniform", {"seed": None})
    layers = [
        keras_object(
            "keras.layers", "InputLayer", {"batch_shape": [None, N_FEATURES], "name": "input_layer"}
        ),
        keras_object(
            "keras.layers",
            "Dense",
            {"name": "dense", "units": 1, "activation": "linear", "kernel_initializer": initializer},
        ),
        *extra_layers,
    ]
    return keras_object("keras", "Sequential", {"name": "sequential", "layers": layers})


def write_keras_archive(path: Path, config: Mapping[str, Any] | None = None) -> Path:
    """A `.keras` zip written by hand (no TensorFlow needed): config, metadata and a dummy weights file."""
    return write_zip(
        path,
        {
            "metadata.json": json.dumps(
                {"keras_version": "3.5.0", "date_saved": "2024-09-01@00:00:00"}
            ).encode(),
            "config.json": json.dumps(config if config is not None else keras_config()).encode(),
            "model.weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(64),
        },
    )
