"""The two entry points: inspect an uploaded artifact, and load a stored one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlplatform.formats.base import (
    ArtifactFormat,
    InvalidArtifactError,
    ModelDescription,
    UnsafeArtifactError,
)
from mlplatform.formats.describe import InspectedArtifact, ModelFacts, ModelHints, describe
from mlplatform.formats.detect import Kind, detect_kind
from mlplatform.formats.keras_format import inspect_keras, load_keras
from mlplatform.formats.lightgbm_format import inspect_lightgbm
from mlplatform.formats.lightgbm_format import load_booster as load_lightgbm
from mlplatform.formats.mlflow_format import extract_model, merge_hints, read_mlflow
from mlplatform.formats.onnx_format import inspect_onnx, load_onnx
from mlplatform.formats.pickle_format import inspect_pickle, load_pickle
from mlplatform.formats.skops_format import inspect_skops, load_skops
from mlplatform.formats.xgboost_format import inspect_xgboost
from mlplatform.formats.xgboost_format import load_booster as load_xgboost

_NO_HINTS = ModelHints()


def inspect_artifact(
    path: Path, *, filename: str, allow_pickle: bool, hints: ModelHints = _NO_HINTS, workdir: Path
) -> InspectedArtifact:
    """Detect the format from the content, validate it without running its code, and describe the model.

    Raises UnsafeArtifactError for artifacts that would run code or read other files (pickles unless
    `allow_pickle`, untrusted skops types, ONNX external data, Keras custom code) and InvalidArtifactError for
    anything else that is wrong; both carry one sentence for the uploader. An MLflow zip is unpacked into
    `workdir`, and the returned path is the model file inside it.
    """
    kind = detect_kind(path, filename=filename)
    if kind is not Kind.MLFLOW:
        return InspectedArtifact(describe(_facts(path, kind, allow_pickle=allow_pickle), hints), path)
    model = read_mlflow(path)
    inner = extract_model(path, model, workdir)
    try:
        inner_kind = detect_kind(inner, filename=model.member)
        if inner_kind is Kind.MLFLOW:
            raise InvalidArtifactError(
                "The MLflow model's model file is itself an MLflow model; upload the inner one."
            )
        if inner_kind is Kind.PICKLE and not allow_pickle:
            raise UnsafeArtifactError(model.pickle_refusal())
        facts = _facts(inner, inner_kind, allow_pickle=allow_pickle)
        return InspectedArtifact(describe(facts, merge_hints(hints, model.signature)), inner)
    except BaseException:
        inner.unlink(missing_ok=True)
        raise


def _facts(path: Path, kind: Kind, *, allow_pickle: bool) -> ModelFacts:
    match kind:
        case Kind.SKOPS:
            return inspect_skops(path)
        case Kind.XGBOOST_UBJ | Kind.XGBOOST_JSON:
            return inspect_xgboost(path, ArtifactFormat(kind.value))
        case Kind.LIGHTGBM_TEXT:
            return inspect_lightgbm(path)
        case Kind.ONNX:
            return inspect_onnx(path)
        case Kind.KERAS:
            return inspect_keras(path)
        case Kind.PICKLE:
            return inspect_pickle(path, allow_pickle=allow_pickle)
        case Kind.MLFLOW:
            raise InvalidArtifactError("An MLflow model cannot be nested in another; upload the inner one.")


def load_model(path: Path, description: ModelDescription, *, allow_pickle: bool) -> Any:
    """The native model object: a scikit-learn estimator, xgboost.Booster, lightgbm.Booster, onnx.ModelProto,
    Keras model, or (pickles only, when allowed) whatever joblib returns."""
    kind = detect_kind(path, filename=description.file_name)
    if kind.value != description.format.value:
        raise InvalidArtifactError(
            f"The stored artifact is {kind.value} but its version says {description.format.value}; upload "
            "it again."
        )
    match description.format:
        case ArtifactFormat.SKOPS:
            return load_skops(path)
        case ArtifactFormat.XGBOOST_UBJ | ArtifactFormat.XGBOOST_JSON:
            return load_xgboost(path, description.format)
        case ArtifactFormat.LIGHTGBM_TEXT:
            return load_lightgbm(path)
        case ArtifactFormat.ONNX:
            return load_onnx(path)
        case ArtifactFormat.KERAS:
            return load_keras(path)
        case ArtifactFormat.PICKLE:
            return load_pickle(path, allow_pickle=allow_pickle)
