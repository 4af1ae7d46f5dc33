"""Nothing from an artifact runs, and hostile files are refused with a clear reason instead of crashing us."""

from __future__ import annotations

import json
import pickle
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import check_array

from mlplatform.formats import (
    ArtifactFormat,
    Framework,
    InvalidArtifactError,
    ModelDescription,
    Task,
    UnsafeArtifactError,
    inspect_artifact,
    load_model,
    safezip,
)
from tests.fixtures_models import (
    PickleBomb,
    classification_data,
    linear_onnx,
    train_lightgbm_classifier,
    train_sklearn_classifier,
    train_xgboost_classifier,
    write_artifact,
    write_mlflow_zip,
    write_pickle_bomb,
    write_zip,
)

JOBLIB_COMPRESSIONS = [0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)]


def _inspect(path: Path, tmp_path: Path, *, allow_pickle: bool = False) -> ModelDescription:
    return inspect_artifact(
        path, filename=path.name, allow_pickle=allow_pickle, workdir=tmp_path / "work"
    ).description


def test_the_pickle_bomb_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(PickleBomb(marker))).close()  # the control: without our checks it fires
    assert marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_bare_pickle_is_refused_without_running_it(protocol: int, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_pickle_bomb(marker, tmp_path / "model.pkl", protocol=protocol)

    with pytest.raises(UnsafeArtifactError, match=r"skops\.io\.dump.*save_model.*skl2onnx"):
        _inspect(path, tmp_path)

    assert not marker.exists()


@pytest.mark.parametrize("compress", JOBLIB_COMPRESSIONS, ids=str)
def test_a_joblib_file_is_refused_without_running_it(compress: object, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_pickle_bomb(marker, tmp_path / "upload.bin", compress=compress)

    with pytest.raises(UnsafeArtifactError, match="pickle"):
        inspect_artifact(path, filename="model.skops", allow_pickle=False, workdir=tmp_path)

    assert not marker.exists()


def test_load_model_refuses_a_stored_pickle_when_pickles_are_off(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_pickle_bomb(marker, tmp_path / "model.pkl", compress=3)
    description = ModelDescription(
        Framework.SKLEARN, ArtifactFormat.PICKLE, "x", Task.REGRESSION, (), file_name="model.pkl"
    )

    with pytest.raises(UnsafeArtifactError):
        load_model(path, description, allow_pickle=False)

    assert not marker.exists()


@pytest.mark.parametrize("declared", ["cloudpickle", "pickle", "skops"])
def test_an_mlflow_model_holding_a_pickle_is_refused_without_running_it(
    declared: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    bomb = write_pickle_bomb(marker, tmp_path / "model.pkl", protocol=4)
    upload = write_mlflow_zip(bomb, "sklearn", tmp_path, serialization_format=declared)
    workdir = tmp_path / "work"

    with pytest.raises(UnsafeArtifactError, match="serialization_format='skops'"):
        inspect_artifact(upload, filename="model.zip", allow_pickle=False, workdir=workdir)

    assert not marker.exists()
    assert not any(workdir.iterdir())  # the extracted file is removed again


def test_skops_refuses_a_function_outside_the_trust_list(tmp_path: Path) -> None:
    X, y = classification_data()
    model = FunctionTransformer(check_array).fit(X, y)
    path = write_artifact(model, ArtifactFormat.SKOPS, tmp_path)

    with pytest.raises(UnsafeArtifactError, match=r"sklearn\.utils\.validation\.check_array"):
        _inspect(path, tmp_path)


@pytest.mark.parametrize(
    ("module", "name"), [("builtins", "eval"), ("os", "system"), ("subprocess", "Popen")]
)
def test_skops_refuses_dangerous_callables_smuggled_into_the_schema(
    module: str, name: str, tmp_path: Path
) -> None:
    X, y = classification_data()
    path = write_artifact(FunctionTransformer(np.abs).fit(X, y), ArtifactFormat.SKOPS, tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {entry: archive.read(entry) for entry in archive.namelist()}
    schema = members["schema.json"].decode()
    assert '"__class__": "absolute"' in schema
    schema = schema.replace('"__class__": "absolute"', f'"__class__": "{name}"')
    members["schema.json"] = schema.replace('"__module__": "numpy"', f'"__module__": "{module}"').encode()
    write_zip(path, members)

    with pytest.raises(UnsafeArtifactError, match=f"{module}.{name}"):
        _inspect(path, tmp_path)
    description = ModelDescription(Framework.SKLEARN, ArtifactFormat.SKOPS, "x", Task.REGRESSION, ())
    with pytest.raises(UnsafeArtifactError):
        load_model(path, description, allow_pickle=False)


def test_onnx_with_external_data_is_refused(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "model.onnx"
    onnx.save_model(linear_onnx(), path, save_as_external_data=True, location="weights.bin", size_threshold=0)

    with pytest.raises(UnsafeArtifactError, match="external"):
        _inspect(path, tmp_path)


def test_onnx_pointing_external_data_at_a_server_file_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto

    model = linear_onnx()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="/etc/passwd")
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())

    with pytest.raises(UnsafeArtifactError, match="W"):
        _inspect(path, tmp_path)


def _zip_with(tmp_path: Path, infos: Sequence[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in infos:
            archive.writestr(info, data)
    return path


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _mark_encrypted(path: Path, name: bytes) -> None:
    """Set the "encrypted" flag of `name` in the central directory (zipfile cannot write encrypted data)."""
    data = bytearray(path.read_bytes())
    header = data.find(b"PK\x01\x02")
    while header >= 0:
        name_length = int.from_bytes(data[header + 28 : header + 30], "little")
        if data[header + 46 : header + 46 + name_length] == name:
            data[header + 8] |= 0x1
        header = data.find(b"PK\x01\x02", header + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("../../etc/cron.d/job", "unsafe path"),
        ("model/../../escape", "unsafe path"),
        ("/etc/passwd", "unsafe path"),
        ("C:/Windows/evil.dll", "unsafe path"),
        ("model\\..\\evil", "unsafe path"),
        (_symlink("model/link"), "symbolic link"),
        ("model/secret", "encrypted"),
    ],
    ids=["dotdot", "inner-dotdot", "absolute", "drive", "backslash", "symlink", "encrypted"],
)
def test_zip_entries_that_could_escape_or_hide_are_refused(
    entry: zipfile.ZipInfo | str, problem: str, tmp_path: Path
) -> None:
    path = _zip_with(tmp_path, [("schema.json", b"{}"), (entry, b"x")])
    if problem == "encrypted":
        _mark_encrypted(path, b"model/secret")

    with pytest.raises(InvalidArtifactError, match=problem):
        _inspect(path, tmp_path)


def test_a_zip_bomb_is_refused_before_anything_is_expanded(tmp_path: Path) -> None:
    path = _zip_with(tmp_path, [("schema.json", b"{}"), ("weights.npy", bytes(20 * 1024**2))])
    assert path.stat().st_size < 100 * 1024

    with pytest.raises(InvalidArtifactError, match="zip bomb"):
        _inspect(path, tmp_path)


def test_a_zip_expanding_past_the_size_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(safezip, "MAX_TOTAL_BYTES", 1024)
    path = _zip_with(tmp_path, [("schema.json", b"{}"), ("a.npy", b"x" * 600), ("b.npy", b"y" * 600)])

    with pytest.raises(InvalidArtifactError, match="expands to more than"):
        _inspect(path, tmp_path)


def test_a_zip_with_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safezip, "MAX_ENTRIES", 10)
    path = _zip_with(tmp_path, [("schema.json", b"{}")] + [(f"{i}.npy", b"") for i in range(10)])

    with pytest.raises(InvalidArtifactError, match="11 entries"):
        _inspect(path, tmp_path)


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
def test_a_zip_with_a_duplicated_entry_is_refused(tmp_path: Path) -> None:
    path = _zip_with(tmp_path, [("schema.json", b"{}"), ("schema.json", b"{}")])

    with pytest.raises(InvalidArtifactError, match="twice"):
        _inspect(path, tmp_path)


def test_an_mlflow_model_pointing_outside_its_folder_is_refused(tmp_path: Path) -> None:
    model, _, _ = train_sklearn_classifier()
    inner = write_artifact(model, ArtifactFormat.SKOPS, tmp_path / "dir")
    upload = write_mlflow_zip(inner, "sklearn", tmp_path)
    with zipfile.ZipFile(upload) as archive:
        members = {entry: archive.read(entry) for entry in archive.namelist()}
    members["model/MLmodel"] = members["model/MLmodel"].replace(
        b"pickled_model: model.skops", b"pickled_model: ../x"
    )
    write_zip(upload, members)

    with pytest.raises(InvalidArtifactError, match="does not name a model file"):
        _inspect(upload, tmp_path)


def test_skops_trusts_sklearn_classes_but_nothing_callable_outside_them() -> None:
    from mlplatform.formats.skops_format import is_trusted_type

    assert is_trusted_type("sklearn.tree._tree.Tree")
    assert is_trusted_type("sklearn.ensemble._forest.RandomForestClassifier")
    for name in ["sklearn.utils.validation.check_array", "builtins.eval", "os.system", "sklearn.evil.Thing",
                 "sklearn.tree._tree.Tree.__reduce__", "sklearnx.Thing", "sklearn..Tree"]:  # fmt: skip
        assert not is_trusted_type(name), name


def test_error_messages_are_one_sentence_for_a_person(tmp_path: Path) -> None:
    path = write_pickle_bomb(tmp_path / "pwned", tmp_path / "model.pkl", protocol=5)
    with pytest.raises(UnsafeArtifactError) as caught:
        _inspect(path, tmp_path)
    message = str(caught.value)
    assert message[0].isupper() and message.endswith(".")
    assert "\n" not in message
    json.dumps({"error": {"message": message}})


def _xgboost_json(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    model, _, _ = train_xgboost_classifier(3)
    path = write_artifact(model, ArtifactFormat.XGBOOST_JSON, tmp_path)
    return json.loads(path.read_text()), path


@pytest.mark.parametrize(
    ("field", "value"),
    [("left_children", 10**6), ("left_children", 0), ("right_children", -5), ("split_indices", 10**6)],
    ids=["child-out-of-range", "child-cycle", "one-child", "feature-out-of-range"],
)
def test_xgboost_trees_indexing_outside_the_model_are_refused(field: str, value: int, tmp_path: Path) -> None:
    # Unchecked, XGBoost loads these and then segfaults (or loops forever) on the first prediction.
    document, path = _xgboost_json(tmp_path)
    document["learner"]["gradient_booster"]["model"]["trees"][0][field][0] = value
    path.write_text(json.dumps(document))

    with pytest.raises(InvalidArtifactError, match="XGBoost model is malformed"):
        _inspect(path, tmp_path)


def test_a_ubj_tree_with_an_out_of_range_child_is_refused(tmp_path: Path) -> None:
    model, _, _ = train_xgboost_classifier(3)
    path = write_artifact(model, ArtifactFormat.XGBOOST_UBJ, tmp_path)
    data = bytearray(path.read_bytes())
    key = data.find(b"left_children")
    assert data[key + 13 : key + 17] == b"[$l#"  # a typed int32 array: count marker, count, big-endian values
    count_size = {ord("i"): 1, ord("U"): 1, ord("I"): 2, ord("l"): 4, ord("L"): 8}[data[key + 17]]
    first = key + 18 + count_size
    data[first : first + 4] = (10**6).to_bytes(4, "big")
    path.write_bytes(bytes(data))

    with pytest.raises(InvalidArtifactError, match="child indices outside the tree"):
        _inspect(path, tmp_path)


@pytest.mark.parametrize("kind", ["ubj", "json"])
def test_deeply_nested_xgboost_documents_are_refused_before_xgboost_parses_them(
    kind: str, tmp_path: Path
) -> None:
    depth = 100_000  # XGBoost's recursive parsers overflow the stack on this
    if kind == "ubj":
        data = b"{L" + (7).to_bytes(8, "big") + b"learner" + b"[" * depth + b"]" * depth + b"}"
    else:
        data = b'{"learner":' + b"[" * depth + b"]" * depth + b"}"
    path = tmp_path / "model.bin"
    path.write_bytes(data)

    with pytest.raises(InvalidArtifactError, match="nest"):
        _inspect(path, tmp_path)


def _lightgbm_text(tmp_path: Path) -> tuple[str, Path]:
    model, _, _ = train_lightgbm_classifier(3)
    path = write_artifact(model, ArtifactFormat.LIGHTGBM_TEXT, tmp_path)
    return path.read_text(), path


def _replace_line(text: str, prefix: str, value: str) -> str:
    start = text.index(prefix)
    end = text.index("\n", start)
    return text[:start] + prefix + value + text[end:]


@pytest.mark.parametrize(
    ("prefix", "value", "problem"),
    [
        ("split_feature=", "99 1 2", "feature the model does not have"),
        ("left_child=", "7 -1 -3", "child index outside the tree"),
        ("left_child=", "0_1 -1 -3", "not an integer"),  # Python reads 01, LightGBM reads 0: a cycle
        ("right_child=", "2 -2", "values in right_child"),
        ("tree_sizes=", "9999999 1", "tree_sizes|past the end"),
        ("num_tree_per_iteration=", "1", "inconsistent"),
        ("max_feature_idx=", "1", "feature names"),
    ],
)
def test_lightgbm_models_that_would_crash_lightgbm_are_refused(
    prefix: str, value: str, problem: str, tmp_path: Path
) -> None:
    # Unchecked, LightGBM aborts the whole process on each of these (at load or on the first prediction).
    text, path = _lightgbm_text(tmp_path)
    path.write_text(_replace_line(text, prefix, value))

    with pytest.raises(InvalidArtifactError, match=problem):
        _inspect(path, tmp_path)
