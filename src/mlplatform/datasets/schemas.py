"""Dataset request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlplatform.bounds import Text

T = TypeVar("T")
DatasetFormat = Literal["csv", "parquet"]
_TAG_KEY_LIMIT = 64
_TAG_VALUE_LIMIT = 256


class DatasetMetadata(BaseModel):
    """The optional form fields of an upload: `description`, and `tags` (a JSON object of strings)."""

    model_config = ConfigDict(extra="forbid")

    description: Text = Field("", max_length=10_000)
    tags: dict[Text, Text] = {}

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) > 50:
            raise ValueError("at most 50 tags")
        for key, value in tags.items():
            if not key or len(key) > _TAG_KEY_LIMIT or len(value) > _TAG_VALUE_LIMIT:
                limits = f"keys are 1-{_TAG_KEY_LIMIT} characters, values up to {_TAG_VALUE_LIMIT}"
                raise ValueError(f"tag {key[:64]!r}: {limits}")
        return tags


class ColumnRead(BaseModel):
    name: str
    type: str = Field(description="the Arrow type, e.g. int64, double, string, bool, timestamp[s]")
    nulls: int
    min: int | float | None = Field(None, description="numeric columns: over the finite values")
    max: int | float | None = None
    mean: float | None = None


class DatasetRead(BaseModel):
    id: str
    name: str
    format: DatasetFormat
    size_bytes: int
    sha256: str
    rows: int
    columns: list[ColumnRead]
    storage_key: str = Field(description="where the file is stored: datasets/{name}/{id}/data.{format}")
    description: str
    tags: dict[str, str]
    created_at: datetime
    created_by: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
