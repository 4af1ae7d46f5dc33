"""Formats are told apart by content; broken files and contradicting hints get one clear sentence."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.formats import (
    ArtifactFormat,
    FeatureType,
    Framework,
    InvalidArtifactError,
    ModelDescription,
    ModelHints,
    Task,
    UnsafeArtifactError,
    inspect_artifact,
    load_model,
)
from tests.fixtures_models import (
    keras_config,
    linear_onnx,
    train_lightgbm_classifier,
    train_sklearn_classifier,
    train_sklearn_regressor,
    train_xgboost_classifier,
    write_artifact,
    write_keras_archive,
    write_mlflow_zip,
    write_zip,
)

F = ArtifactFormat
NAMES = ["age", "income", "children", "tenure"]


def _inspect(path: Path, tmp_path: Path, *, filename: str | None = None, **hints: object) -> ModelDescription:
    return inspect_artifact(
        path,
        filename=filename if filename is not None else path.name,
        allow_pickle=False,
        hints=ModelHints(**hints),  # type: ignore[arg-type]
        workdir=tmp_path / "work",
    ).description


def _file(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifactError, match="empty"):
        _inspect(_file(tmp_path, b""), tmp_path)


@pytest.mark.parametrize(
    ("data", "name", "problem"),
    [
        (bytes(range(256)) * 4, "model.bin", "not a model in any accepted format"),
        (b"hello world, this is not a model\n", "model.txt", "not a model in any accepted format"),
        (b"age,income\n1,2\n", "data.csv", "not a model in any accepted format"),
        (b'{"weights": [1, 2, 3]}', "model.json", "not an XGBoost model"),
        (b"binf" + bytes(100), "model.bin", "legacy XGBoost binary"),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "model.bin", "legacy Keras HDF5"),
        (b"\x00\x01garbage", "model.pt", "PyTorch"),
        (b"PK\x05\x06" + bytes(18), "model.zip", "zip archive is empty"),
        (b"PK\x03\x04 but then nothing", "model.zip", "cannot be read"),
    ],
    ids=["random", "text", "csv", "other-json", "xgb-binary", "hdf5", "pytorch-name", "empty-zip", "bad-zip"],
)
def test_garbage_is_refused_with_a_reason(data: bytes, name: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArtifactError, match=problem) as caught:
        _inspect(_file(tmp_path, data), tmp_path, filename=name)
    assert str(caught.value).endswith(".")


def test_a_zip_that_is_no_model_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "x.zip", {"README.md": b"hi", "data/part-0.csv": b"a,b\n"})

    with pytest.raises(InvalidArtifactError, match="neither a skops file"):
        _inspect(path, tmp_path)


def _artifact(fmt: ArtifactFormat, folder: Path) -> Path:
    if fmt is F.SKOPS:
        return write_artifact(train_sklearn_classifier()[0], fmt, folder)
    if fmt is F.LIGHTGBM_TEXT:
        return write_artifact(train_lightgbm_classifier(3)[0], fmt, folder)
    if fmt is F.ONNX:
        return write_artifact(train_sklearn_classifier()[0], fmt, folder)
    return write_artifact(train_xgboost_classifier(3)[0], fmt, folder)


def _whole_model(fmt: ArtifactFormat, data: bytes, cut: int) -> bool:
    """Whether `data[:cut]` still holds the whole model (only trailing whitespace or LightGBM's optional
    feature-importance and parameter sections are gone)."""
    kept = data[:cut]
    return kept.rstrip() == data.rstrip() or (fmt is F.LIGHTGBM_TEXT and b"end of trees\n" in kept)


@pytest.mark.parametrize("fmt", [F.SKOPS, F.XGBOOST_UBJ, F.XGBOOST_JSON, F.LIGHTGBM_TEXT, F.ONNX])
def test_truncated_files_are_refused_never_crash(fmt: ArtifactFormat, tmp_path: Path) -> None:
    # XGBoost segfaults on truncated JSON and LightGBM aborts on a truncated model unless we check first.
    data = _artifact(fmt, tmp_path / "full").read_bytes()
    cuts = sorted({*range(1, len(data), max(1, len(data) // 60)), len(data) - 2, len(data) - 1})
    for cut in cuts:
        path = _file(tmp_path, data[:cut], f"cut-{cut}")
        try:
            _inspect(path, tmp_path)
        except InvalidArtifactError as exc:
            assert str(exc).endswith("."), cut
        else:
            assert _whole_model(fmt, data, cut), f"{fmt.value} cut at {cut} of {len(data)} bytes was accepted"


@pytest.mark.parametrize("fmt", [F.SKOPS, F.XGBOOST_UBJ, F.LIGHTGBM_TEXT, F.ONNX])
def test_the_file_name_does_not_decide_the_format(fmt: ArtifactFormat, tmp_path: Path) -> None:
    path = _artifact(fmt, tmp_path)

    description = _inspect(path, tmp_path, filename="model.pkl")

    assert description.format is fmt


def test_load_model_refuses_a_file_whose_content_differs_from_its_description(tmp_path: Path) -> None:
    path = _artifact(F.XGBOOST_UBJ, tmp_path)
    description = _inspect(path, tmp_path)
    onnx_description = ModelDescription(
        Framework.ONNX, F.ONNX, "x", description.task, description.features, file_name="model.onnx"
    )

    with pytest.raises(InvalidArtifactError, match="xgboost-ubj"):
        load_model(path, onnx_description, allow_pickle=False)


def test_hinted_feature_names_and_types_name_an_unnamed_model(tmp_path: Path) -> None:
    path = _artifact(F.XGBOOST_UBJ, tmp_path)

    description = _inspect(path, tmp_path, feature_names=NAMES, feature_types={"children": FeatureType.INT})

    assert [(f.name, f.type) for f in description.features] == [
        ("age", FeatureType.FLOAT),
        ("income", FeatureType.FLOAT),
        ("children", FeatureType.INT),
        ("tenure", FeatureType.FLOAT),
    ]


@pytest.mark.parametrize("fmt", [F.SKOPS, F.XGBOOST_JSON, F.LIGHTGBM_TEXT, F.ONNX])
def test_a_feature_count_mismatch_names_both_numbers(fmt: ArtifactFormat, tmp_path: Path) -> None:
    path = _artifact(fmt, tmp_path)

    with pytest.raises(InvalidArtifactError, match="3 feature names but the model expects 4 features"):
        _inspect(path, tmp_path, feature_names=NAMES[:3])


def test_names_the_model_was_trained_on_win_and_may_not_be_contradicted(tmp_path: Path) -> None:
    model, X, y = train_sklearn_classifier()
    model.fit(pd.DataFrame(X, columns=NAMES), y)
    path = write_artifact(model, F.SKOPS, tmp_path)

    assert [f.name for f in _inspect(path, tmp_path).features] == NAMES
    assert [f.name for f in _inspect(path, tmp_path, feature_names=NAMES).features] == NAMES
    with pytest.raises(InvalidArtifactError, match="trained on"):
        _inspect(path, tmp_path, feature_names=list(reversed(NAMES)))


def test_lightgbm_keeps_the_names_it_was_trained_with(tmp_path: Path) -> None:
    model, X, y = train_lightgbm_classifier()
    model.fit(pd.DataFrame(X, columns=NAMES), y)
    path = write_artifact(model, F.LIGHTGBM_TEXT, tmp_path)

    assert [f.name for f in _inspect(path, tmp_path).features] == NAMES


def test_a_task_hint_that_contradicts_the_model_is_refused(tmp_path: Path) -> None:
    path = _artifact(F.XGBOOST_UBJ, tmp_path)

    with pytest.raises(
        InvalidArtifactError, match="says the task is regression but the model is a classification"
    ):
        _inspect(path, tmp_path, task=Task.REGRESSION)


def test_a_model_that_cannot_tell_its_task_needs_the_hint(tmp_path: Path) -> None:
    path = write_artifact(linear_onnx(), F.ONNX, tmp_path)

    with pytest.raises(InvalidArtifactError, match="set task to"):
        _inspect(path, tmp_path)
    description = _inspect(path, tmp_path, task=Task.REGRESSION)
    assert (description.task, len(description.features)) == (Task.REGRESSION, 4)
    assert description.outputs == {"prediction": {"type": "float"}}


def test_class_hints_name_encoded_labels(tmp_path: Path) -> None:
    model, _, _ = train_xgboost_classifier()
    path = write_artifact(model, F.XGBOOST_UBJ, tmp_path)

    description = _inspect(path, tmp_path, classes=["stays", "churns"])

    assert description.classes == ("stays", "churns")
    assert description.outputs == {
        "prediction": {"type": "string"},
        "probabilities": {"classes": ["stays", "churns"]},
    }
    with pytest.raises(InvalidArtifactError, match="lists 3 classes but the model predicts 2 classes"):
        _inspect(path, tmp_path, classes=["a", "b", "c"])


def test_class_hints_may_not_rename_the_labels_a_model_knows(tmp_path: Path) -> None:
    model, _, _ = train_sklearn_classifier(labels=["cat", "dog"])
    path = write_artifact(model, F.SKOPS, tmp_path)

    assert _inspect(path, tmp_path, classes=["cat", "dog"]).classes == ("cat", "dog")
    with pytest.raises(InvalidArtifactError, match=r"lists the classes \['dog', 'cat'\]"):
        _inspect(path, tmp_path, classes=["dog", "cat"])


def test_regressors_take_no_classes(tmp_path: Path) -> None:
    path = write_artifact(train_sklearn_regressor()[0], F.SKOPS, tmp_path)

    with pytest.raises(InvalidArtifactError, match="regressor"):
        _inspect(path, tmp_path, classes=[0, 1])


@pytest.mark.parametrize(
    ("hints", "problem"),
    [
        (ModelHints(feature_names=["a", "a", "b", "c"]), "repeat a name"),
        (ModelHints(feature_types={"height": FeatureType.INT}), "unknown features"),
    ],
)
def test_malformed_hints_are_refused(hints: ModelHints, problem: str, tmp_path: Path) -> None:
    path = _artifact(F.XGBOOST_UBJ, tmp_path)

    with pytest.raises(InvalidArtifactError, match=problem):
        inspect_artifact(path, filename="model.ubj", allow_pickle=False, hints=hints, workdir=tmp_path)


def test_an_mlflow_model_without_a_loadable_flavour_is_refused(tmp_path: Path) -> None:
    mlmodel = b"flavors:\n  python_function:\n    loader_module: my_code\n  pytorch:\n    model_data: data\n"
    path = write_zip(tmp_path / "m.zip", {"model/MLmodel": mlmodel, "model/data/model.pth": b"x"})

    with pytest.raises(InvalidArtifactError, match=r"flavours \(python_function, pytorch\)"):
        _inspect(path, tmp_path)


@pytest.mark.parametrize(
    ("mlmodel", "problem"),
    [
        (b"flavors: [unclosed", "not valid YAML"),
        (b"just a string", "no flavors section"),
        (b"flavors:\n  onnx:\n    data: missing.onnx\n", "not one model file in the archive"),
    ],
)
def test_broken_mlmodel_files_are_refused(mlmodel: bytes, problem: str, tmp_path: Path) -> None:
    path = write_zip(tmp_path / "m.zip", {"MLmodel": mlmodel, "model.onnx": b"\x08\x07"})

    with pytest.raises(InvalidArtifactError, match=problem):
        _inspect(path, tmp_path)


def test_a_nested_mlflow_model_is_refused(tmp_path: Path) -> None:
    inner = write_mlflow_zip(_artifact(F.ONNX, tmp_path), "onnx", tmp_path)
    (tmp_path / "outer").mkdir()
    outer = write_mlflow_zip(inner.rename(tmp_path / "model.onnx"), "onnx", tmp_path / "outer")

    with pytest.raises(InvalidArtifactError, match="itself an MLflow model"):
        _inspect(outer, tmp_path)


@pytest.mark.parametrize(
    ("layer", "refused"),
    [
        ({"module": "keras.layers", "class_name": "Lambda", "config": {"function": "..."}}, "Lambda"),
        ({"module": "my_package.layers", "class_name": "Evil", "config": {}}, "my_package.layers.Evil"),
        ({"module": None, "class_name": "X", "registered_name": "evil>Thing", "config": {}}, "evil>Thing"),
    ],
    ids=["lambda", "foreign-module", "custom-object"],
)
def test_keras_code_outside_keras_is_refused_before_keras_is_imported(
    layer: dict[str, object], refused: str, tmp_path: Path
) -> None:
    path = write_keras_archive(tmp_path / "model.keras", keras_config(extra_layers=[layer]))

    with pytest.raises(UnsafeArtifactError, match=refused):
        _inspect(path, tmp_path)


def test_a_keras_model_without_tensorflow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)  # as if the extra were not installed: import fails
    path = write_keras_archive(tmp_path / "upload.bin")

    with pytest.raises(InvalidArtifactError, match=r"pip install 'mlplatform\[tensorflow\]'"):
        _inspect(path, tmp_path)


def test_numpy_labels_become_plain_python_values(tmp_path: Path) -> None:
    model, _, _ = train_sklearn_classifier(labels=[np.int64(3), np.int64(7)])
    description = _inspect(write_artifact(model, F.SKOPS, tmp_path), tmp_path)

    assert description.classes == (3, 7)
    assert all(type(label) is int for label in description.classes or ())
