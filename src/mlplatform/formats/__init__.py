"""Model artifact formats: detect, validate and load every accepted format without executing its code."""

from mlplatform.formats.artifacts import inspect_artifact, load_model
from mlplatform.formats.base import (
    ArtifactFormat,
    Feature,
    FeatureType,
    Framework,
    InvalidArtifactError,
    ModelDescription,
    Task,
    UnsafeArtifactError,
)
from mlplatform.formats.describe import InspectedArtifact, ModelHints

__all__ = [
    "ArtifactFormat",
    "Feature",
    "FeatureType",
    "Framework",
    "InspectedArtifact",
    "InvalidArtifactError",
    "ModelDescription",
    "ModelHints",
    "Task",
    "UnsafeArtifactError",
    "inspect_artifact",
    "load_model",
]
