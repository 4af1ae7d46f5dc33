"""Registry request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlplatform.bounds import Text, VersionNumber
from mlplatform.formats.base import FeatureType, Task

T = TypeVar("T")
_TAG_KEY_LIMIT = 64
_TAG_VALUE_LIMIT = 256


def _check_tags(tags: dict[str, str] | None) -> dict[str, str] | None:
    if tags is None:
        return None
    if len(tags) > 50:
        raise ValueError("at most 50 tags")
    for key, value in tags.items():
        if not key or len(key) > _TAG_KEY_LIMIT or len(value) > _TAG_VALUE_LIMIT:
            raise ValueError(
                f"tag {key[:64]!r}: keys are 1-{_TAG_KEY_LIMIT} characters, values up to {_TAG_VALUE_LIMIT}"
            )
    return tags


class VersionMetadata(BaseModel):
    """The JSON `metadata` part of an upload; all optional. Hints fill in what the artifact lacks."""

    model_config = ConfigDict(extra="forbid")

    description: Text = Field("", max_length=10_000)
    tags: dict[Text, Text] = {}
    metrics: dict[Text, float] = {}
    parent: Text | None = Field(
        None, description="the version this one was derived from (any reference form)"
    )
    training_dataset_id: Text | None = Field(None, max_length=64)
    training_job_id: Text | None = Field(None, max_length=64)
    feature_names: list[Text] | None = Field(None, max_length=10_000)
    feature_types: dict[str, FeatureType] | None = None
    task: Task | None = None
    classes: list[Text | int] | None = None
    reference_sample: list[list[float]] | None = Field(
        None, max_length=10_000, description="rows the model was trained on, kept for drift detection"
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_tags(value) or {}


class FeatureRead(BaseModel):
    name: str
    type: FeatureType


class ArtifactRead(BaseModel):
    format: str
    size: int
    sha256: str
    library_version: str


class VersionRead(BaseModel):
    id: str
    name: str
    version: int
    status: Literal["ready", "archived"]
    aliases: list[str]
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    framework: str
    flavour: str
    task: str
    features: list[FeatureRead]
    classes: list[Any] | None
    outputs: dict[str, Any]
    artifact: ArtifactRead
    runtime: dict[str, Any]
    parent: str | None
    training_dataset_id: str | None
    training_job_id: str | None
    created_at: datetime
    created_by: str


class ModelRead(BaseModel):
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int | None = Field(description="the newest version number (archived ones included)")
    default_version: int | None = Field(
        description="what the bare name resolves to: production, else newest ready"
    )
    versions: int
    frameworks: list[str]
    created_at: datetime
    updated_at: datetime
    created_by: str


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Text | None = Field(None, max_length=10_000)
    tags: dict[Text, Text] | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_tags(value)


class StageChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["staging", "production", "archived"]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionNumber


class HistoryEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    details: dict[str, Any]


class AliasesAt(BaseModel):
    """Which version each alias (stages included) pointed at, at time `at`."""

    name: str
    at: datetime
    aliases: dict[str, int]


class VersionBrief(BaseModel):
    id: str
    version: int
    status: str
    created_at: datetime


class Lineage(BaseModel):
    id: str
    parents: list[VersionBrief] = Field(description="the parent chain, nearest first")
    children: list[VersionBrief]
    training_dataset_id: str | None
    training_job_id: str | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
