"""Zipped MLflow model directories: read the MLmodel file and extract the one model file it points to."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlplatform.formats.base import FeatureType, InvalidArtifactError
from mlplatform.formats.describe import ModelHints, reason
from mlplatform.formats.detect import find_mlmodel
from mlplatform.formats.pickle_format import SAFE_EXPORTS
from mlplatform.formats.safezip import extract_member, open_checked_zip, read_member

FLAVOURS = ("sklearn", "xgboost", "lightgbm", "onnx", "keras", "tensorflow")  # in order of preference
_MODEL_KEYS = ("pickled_model", "data", "model_path")
_DIRECTORY_SUFFIXES = {"keras": (".keras",), "tensorflow": (".keras",)}
_MAX_MLMODEL_BYTES = 1024**2
_SIGNATURE_TYPES = {
    "double": FeatureType.FLOAT,
    "float": FeatureType.FLOAT,
    "long": FeatureType.INT,
    "integer": FeatureType.INT,
    "boolean": FeatureType.BOOL,
    "string": FeatureType.STRING,
}


@dataclass(frozen=True)
class MlflowModel:
    flavour: str
    member: str  # the zip entry that holds the model file
    serialization_format: str | None
    signature: ModelHints

    def pickle_refusal(self) -> str:
        how = self.serialization_format or "pickle"
        return (
            f"The MLflow model stores its {self.flavour} model with {how}, which runs code when it is "
            "loaded, and this server refuses pickles; save it with mlflow.sklearn.save_model(..., "
            f"serialization_format='skops') or upload a safe format instead: {SAFE_EXPORTS}."
        )


def read_mlflow(path: Path) -> MlflowModel:
    with open_checked_zip(path) as archive:
        names = archive.namelist()
        entry = find_mlmodel(names)
        if entry is None:
            raise InvalidArtifactError(
                "The zip archive has no MLmodel file; zip the MLflow model directory itself."
            )
        try:
            spec = yaml.safe_load(read_member(archive, entry, limit=_MAX_MLMODEL_BYTES))
        except yaml.YAMLError as exc:
            raise InvalidArtifactError(
                f"The MLmodel file is not valid YAML ({reason(exc)}); zip the model again."
            ) from exc
    flavours = spec.get("flavors") if isinstance(spec, dict) else None
    if not isinstance(flavours, dict):
        raise InvalidArtifactError("The MLmodel file has no flavors section; zip an MLflow model directory.")
    flavour = next((name for name in FLAVOURS if isinstance(flavours.get(name), dict)), None)
    if flavour is None:
        raise InvalidArtifactError(
            f"The MLflow model's flavours ({', '.join(map(str, flavours))}) include none the server loads "
            "without running code; save it with the sklearn, xgboost, lightgbm, onnx or keras flavour."
        )
    config: dict[str, Any] = flavours[flavour]
    relative = next((config[key] for key in _MODEL_KEYS if isinstance(config.get(key), str)), None)
    member = _model_member(names, entry[: -len("MLmodel")], relative, flavour)
    serialization = config.get("serialization_format")
    return MlflowModel(
        flavour=flavour,
        member=member,
        serialization_format=serialization if isinstance(serialization, str) else None,
        signature=signature_hints(spec.get("signature")),
    )


def _model_member(names: list[str], root: str, relative: str | None, flavour: str) -> str:
    if relative is None or relative.startswith("/") or ".." in relative.split("/"):
        raise InvalidArtifactError(
            f"The MLmodel file's {flavour} flavour does not name a model file inside the model directory; "
            "save the model with MLflow again."
        )
    candidate = root + relative.strip("/")
    if candidate in names:
        return candidate
    suffixes = _DIRECTORY_SUFFIXES.get(flavour, ())
    inside = [name for name in names if name.startswith(candidate + "/") and name.endswith(suffixes or ("",))]
    files = [name for name in inside if not name.endswith("/")]
    if suffixes and len(files) == 1:
        return files[0]
    raise InvalidArtifactError(
        f"The MLmodel file's {flavour} flavour points to {relative!r}, which is not one model file in the "
        "archive; zip the complete MLflow model directory."
    )


def extract_model(path: Path, model: MlflowModel, workdir: Path) -> Path:
    """Copy the model file out of the archive under a server-chosen name in `workdir`."""
    with open_checked_zip(path) as archive:
        return extract_member(archive, model.member, workdir / f"mlflow-{uuid.uuid4().hex}.model")


def signature_hints(signature: Any) -> ModelHints:
    """Feature names and types from a column-based MLflow signature; tensor signatures say nothing usable."""
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    try:
        columns = json.loads(inputs) if isinstance(inputs, str) else None
    except ValueError:
        return ModelHints()
    if not isinstance(columns, list) or not columns:
        return ModelHints()
    if not all(
        isinstance(column, dict)
        and isinstance(column.get("name"), str)
        and column.get("type") in _SIGNATURE_TYPES
        for column in columns
    ):
        return ModelHints()
    names = [column["name"] for column in columns]
    return ModelHints(
        feature_names=names, feature_types={c["name"]: _SIGNATURE_TYPES[c["type"]] for c in columns}
    )


def merge_hints(given: ModelHints, signature: ModelHints) -> ModelHints:
    """The upload's hints, with gaps filled from the MLflow signature."""
    if given.feature_names is not None or signature.feature_names is None:
        return given
    types = {**(signature.feature_types or {}), **(given.feature_types or {})}
    return ModelHints(
        feature_names=signature.feature_names, feature_types=types, task=given.task, classes=given.classes
    )
