"""What a model artifact is: its format, framework, task, classes and input/output signature."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Framework(StrEnum):
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    ONNX = "onnx"
    KERAS = "keras"


class ArtifactFormat(StrEnum):
    """How the bytes are laid out. Everything but PICKLE loads without executing code from the artifact."""

    SKOPS = "skops"
    XGBOOST_UBJ = "xgboost-ubj"
    XGBOOST_JSON = "xgboost-json"
    LIGHTGBM_TEXT = "lightgbm-text"
    ONNX = "onnx"
    KERAS = "keras"
    PICKLE = "pickle"  # pickle and joblib: refused unless ml.models.allow-pickle


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class FeatureType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: FeatureType = FeatureType.FLOAT


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """Everything the registry stores about an artifact and serving needs to call it."""

    framework: Framework
    format: ArtifactFormat
    flavour: str  # the estimator's class, e.g. "sklearn.ensemble.RandomForestClassifier"
    task: Task
    features: tuple[Feature, ...]  # the input signature, in the order the model expects
    classes: tuple[str | int | float | bool, ...] | None = None  # classifiers only, in output order
    outputs: dict[str, Any] = field(default_factory=dict)  # output schema, JSON-able
    library_version: str = ""
    file_name: str = "model"  # the normalised artifact's file name under the version's storage prefix


class UnsafeArtifactError(Exception):
    """The artifact would execute code when loaded (pickle/joblib) and ml.models.allow-pickle is false."""


class InvalidArtifactError(Exception):
    """The artifact is not a model in any accepted format, or is broken; the message says which."""
