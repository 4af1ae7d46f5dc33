"""Every accepted format: train, write, inspect, load, and get the in-memory model's predictions back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlplatform.formats import (
    ArtifactFormat,
    Framework,
    ModelDescription,
    ModelHints,
    Task,
    inspect_artifact,
    load_model,
)
from tests.fixtures_models import (
    Array,
    Trained,
    to_onnx,
    train_keras_classifier,
    train_lightgbm_classifier,
    train_lightgbm_regressor,
    train_sklearn_classifier,
    train_sklearn_pipeline,
    train_sklearn_regressor,
    train_xgboost_classifier,
    train_xgboost_regressor,
    write_artifact,
    write_mlflow_zip,
)

F = ArtifactFormat
FEATURES = ["f0", "f1", "f2", "f3"]


FRAMEWORKS = {
    F.SKOPS: Framework.SKLEARN,
    F.XGBOOST_UBJ: Framework.XGBOOST,
    F.XGBOOST_JSON: Framework.XGBOOST,
    F.LIGHTGBM_TEXT: Framework.LIGHTGBM,
    F.ONNX: Framework.ONNX,
    F.PICKLE: Framework.SKLEARN,  # an unpickled object with the scikit-learn API
}
FILE_NAMES = {
    F.SKOPS: "model.skops",
    F.XGBOOST_UBJ: "model.ubj",
    F.XGBOOST_JSON: "model.json",
    F.LIGHTGBM_TEXT: "model.txt",
    F.ONNX: "model.onnx",
    F.PICKLE: "model.pkl",
}
BINARY, THREE, ANIMALS = (0, 1), (0, 1, 2), ("cat", "dog", "fish")
C, R = Task.CLASSIFICATION, Task.REGRESSION


@dataclass(frozen=True)
class Case:
    id: str
    train: Callable[[], Trained]
    fmt: ArtifactFormat
    task: Task
    classes: tuple[Any, ...] | None
    flavour: str
    export: Callable[[Any], Any] = lambda model: model  # what write_artifact receives


def _onnx(zipmap: bool = True) -> Callable[[Any], Any]:
    return lambda model: to_onnx(model, zipmap=zipmap)


def _logistic() -> Trained:
    """Three string classes."""
    return train_sklearn_classifier("logistic", labels=list(ANIMALS))


def _xgb(objective: str) -> str:
    return f"xgboost.Booster[{objective}]"


def _lgb(objective: str) -> str:
    return f"lightgbm.Booster[{objective}]"


RF, GBR = "sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.GradientBoostingRegressor"
SKL2ONNX, ONNXMLTOOLS = "onnx.ModelProto[skl2onnx]", "onnx.ModelProto[OnnxMLTools]"
XGB3, LGB3 = partial(train_xgboost_classifier, 3), partial(train_lightgbm_classifier, 3)
CASES = [
    Case("rf-skops", train_sklearn_classifier, F.SKOPS, C, BINARY, RF),
    Case("logistic-skops", _logistic, F.SKOPS, C, ANIMALS, "sklearn.linear_model.LogisticRegression"),
    Case("pipeline-skops", train_sklearn_pipeline, F.SKOPS, C, BINARY, "sklearn.pipeline.Pipeline"),
    Case("gbr-skops", train_sklearn_regressor, F.SKOPS, R, None, GBR),
    Case("xgb-binary-ubj", train_xgboost_classifier, F.XGBOOST_UBJ, C, BINARY, _xgb("binary:logistic")),
    Case("xgb-multi-json", XGB3, F.XGBOOST_JSON, C, THREE, _xgb("multi:softprob")),
    Case("xgb-regressor-ubj", train_xgboost_regressor, F.XGBOOST_UBJ, R, None, _xgb("reg:squarederror")),
    Case("lgb-binary", train_lightgbm_classifier, F.LIGHTGBM_TEXT, C, BINARY, _lgb("binary")),
    Case("lgb-multi", LGB3, F.LIGHTGBM_TEXT, C, THREE, _lgb("multiclass")),
    Case("lgb-regressor", train_lightgbm_regressor, F.LIGHTGBM_TEXT, R, None, _lgb("regression")),
    Case("rf-onnx-zipmap", train_sklearn_classifier, F.ONNX, C, BINARY, SKL2ONNX, _onnx()),
    Case("pipeline-onnx", train_sklearn_pipeline, F.ONNX, C, BINARY, SKL2ONNX, _onnx(zipmap=False)),
    Case("gbr-onnx", train_sklearn_regressor, F.ONNX, R, None, SKL2ONNX, _onnx()),
    Case("xgb-multi-onnx", XGB3, F.ONNX, C, THREE, ONNXMLTOOLS, _onnx()),
    Case("lgb-binary-onnx", train_lightgbm_classifier, F.ONNX, C, BINARY, ONNXMLTOOLS, _onnx(zipmap=False)),
    Case("lgb-regressor-onnx", train_lightgbm_regressor, F.ONNX, R, None, ONNXMLTOOLS, _onnx()),
    Case("rf-pickle-allowed", train_sklearn_classifier, F.PICKLE, C, BINARY, RF),
    Case(
        "xgb-pickle-allowed", train_xgboost_classifier, F.PICKLE, C, BINARY, "xgboost.sklearn.XGBClassifier"
    ),
]


def reference_outputs(model: Any, X: Array) -> Array:
    """The in-memory model's probabilities (classifiers) or predictions (regressors)."""
    return np.asarray(model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X))


def loaded_outputs(loaded: Any, description: ModelDescription, X: Array) -> Array:
    """The same outputs computed from what load_model returned, the way each runtime is called."""
    binary = description.task is Task.CLASSIFICATION and len(description.classes or ()) == 2
    if description.format is F.ONNX:
        import onnxruntime

        session = onnxruntime.InferenceSession(loaded.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})
        if description.task is Task.REGRESSION:
            return np.asarray(outputs[0]).ravel()
        probabilities = outputs[1]
        if isinstance(probabilities, list):  # ZipMap: one {class: probability} dict per row
            return np.array([[row[label] for label in description.classes or ()] for row in probabilities])
        return np.asarray(probabilities)
    if description.format is F.PICKLE or description.framework is Framework.SKLEARN:
        return reference_outputs(loaded, X)
    if description.framework is Framework.XGBOOST:
        import xgboost

        raw = np.asarray(loaded.predict(xgboost.DMatrix(X)))
    else:
        raw = np.asarray(loaded.predict(X))
    return np.column_stack([1 - raw, raw]) if binary else raw


def _assert_same_outputs(loaded: Any, description: ModelDescription, model: Any, X: Array) -> None:
    """Native formats give bit-identical outputs; ONNX computes in float32."""
    rtol, atol = (1e-4, 1e-5) if description.format is F.ONNX else (1e-7, 0.0)
    np.testing.assert_allclose(
        loaded_outputs(loaded, description, X), reference_outputs(model, X), rtol=rtol, atol=atol
    )


def _check(case: Case, description: ModelDescription) -> None:
    assert description.framework is FRAMEWORKS[case.fmt]
    assert description.format is case.fmt
    assert description.task is case.task
    assert description.classes == case.classes
    assert description.flavour == case.flavour
    assert description.file_name == FILE_NAMES[case.fmt]
    assert [feature.name for feature in description.features] == FEATURES
    assert description.library_version
    if case.task is Task.CLASSIFICATION:
        assert description.outputs["probabilities"] == {"classes": list(case.classes or ())}
    else:
        assert description.outputs == {"prediction": {"type": "float"}}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_format_round_trips_to_identical_predictions(case: Case, tmp_path: Path) -> None:
    model, X, _ = case.train()
    path = write_artifact(case.export(model), case.fmt, tmp_path / "upload")
    allow_pickle = case.fmt is F.PICKLE

    inspected = inspect_artifact(
        path, filename=path.name, allow_pickle=allow_pickle, workdir=tmp_path / "work"
    )

    _check(case, inspected.description)
    assert inspected.path == path
    loaded = load_model(inspected.path, inspected.description, allow_pickle=allow_pickle)
    _assert_same_outputs(loaded, inspected.description, model, X)


MLFLOW_CASES = [
    ("sklearn", CASES[0]),  # skops inside, serialization_format: skops
    ("xgboost", CASES[5]),
    ("lightgbm", CASES[8]),
    ("onnx", CASES[10]),
]


@pytest.mark.parametrize(("flavour", "case"), MLFLOW_CASES, ids=[flavour for flavour, _ in MLFLOW_CASES])
def test_mlflow_zip_yields_the_inner_model(flavour: str, case: Case, tmp_path: Path) -> None:
    model, X, _ = case.train()
    inner = write_artifact(case.export(model), case.fmt, tmp_path / "mlflow-dir")
    serialization = "skops" if flavour == "sklearn" else None
    upload = write_mlflow_zip(inner, flavour, tmp_path, serialization_format=serialization)
    workdir = tmp_path / "work"

    inspected = inspect_artifact(upload, filename="model.zip", allow_pickle=False, workdir=workdir)

    _check(case, inspected.description)
    assert inspected.path.parent == workdir
    assert inspected.path.read_bytes() == inner.read_bytes()
    loaded = load_model(inspected.path, inspected.description, allow_pickle=False)
    _assert_same_outputs(loaded, inspected.description, model, X)


def test_mlflow_model_at_the_archive_root_with_a_signature_names_the_features(tmp_path: Path) -> None:
    model, _, _ = train_xgboost_regressor()
    inner = write_artifact(model, F.XGBOOST_UBJ, tmp_path / "mlflow-dir")
    signature = [("age", "double"), ("income", "double"), ("children", "long"), ("owner", "boolean")]
    upload = write_mlflow_zip(inner, "xgboost", tmp_path, signature=signature, top_folder=None)

    description = inspect_artifact(upload, filename="m.zip", allow_pickle=False, workdir=tmp_path).description

    assert [(f.name, f.type.value) for f in description.features] == [
        ("age", "float"),
        ("income", "float"),
        ("children", "int"),
        ("owner", "bool"),
    ]


def test_a_pickled_lightgbm_booster_is_described_when_pickles_are_allowed(tmp_path: Path) -> None:
    model, X, _ = train_lightgbm_regressor()
    path = write_artifact(model.booster_, F.PICKLE, tmp_path)

    inspected = inspect_artifact(path, filename="anything.bin", allow_pickle=True, workdir=tmp_path)

    assert (inspected.description.framework, inspected.description.format) == (Framework.LIGHTGBM, F.PICKLE)
    loaded = load_model(inspected.path, inspected.description, allow_pickle=True)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))


@pytest.mark.filterwarnings(  # TensorFlow's Variable.__array__ predates numpy 2's copy keyword
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_a_keras_model_round_trips_when_the_tensorflow_extra_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("keras", reason="the tensorflow extra is installed by make test")
    model, X, _ = train_keras_classifier()
    model.save(tmp_path / "model.keras")
    upload = (tmp_path / "model.keras").rename(tmp_path / "upload.bin")  # Keras needs the suffix; we must not

    inspected = inspect_artifact(upload, filename="upload.bin", allow_pickle=False, workdir=tmp_path / "work")

    description = inspected.description
    assert (description.framework, description.format, description.flavour) == (
        Framework.KERAS,
        F.KERAS,
        "keras.Sequential",
    )
    assert (description.task, description.classes, description.file_name) == (C, THREE, "model.keras")
    assert [feature.name for feature in description.features] == FEATURES
    loaded = load_model(inspected.path, description, allow_pickle=False)
    np.testing.assert_allclose(np.asarray(loaded(X)), np.asarray(model(X)), rtol=1e-6)
    hinted = inspect_artifact(
        upload, filename="x", allow_pickle=False, hints=ModelHints(task=R), workdir=tmp_path
    )
    assert hinted.description.task is R  # the task was only guessed from the softmax: the metadata wins
