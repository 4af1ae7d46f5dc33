"""Training job request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlplatform.bounds import Text
from mlplatform.formats.base import Task

T = TypeVar("T")
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
Algorithm = Literal[
    "random_forest",
    "gradient_boosting",
    "hist_gradient_boosting",
    "logistic_regression",
    "linear_regression",
    "ridge",
    "xgboost",
    "lightgbm",
]


class ValidationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.2, gt=0, lt=1, description="share of the rows held out for validation")


class TrainingJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text = Field(description="the model name the trained version is registered under")
    dataset: Text = Field(max_length=64, description="a dataset id")
    target: Text = Field(max_length=256, description="the column to predict")
    features: list[Text] | None = Field(None, max_length=10_000, description="default: every other column")
    task: Task | None = Field(None, description="inferred from the target column when absent")
    algorithm: Algorithm
    hyperparameters: dict[Text, Any] = Field({}, description="keyword arguments of the library's estimator")
    validation: ValidationSpec = ValidationSpec()
    parent: Text | None = Field(None, max_length=300, description="the version this one derives from")
    tags: dict[Text, Text] = {}
    distributed: bool | None = Field(
        None,
        description="train across every Dask worker (xgboost and lightgbm on a Parquet dataset); default: "
        "when the dataset has more rows than jobs.distributed-threshold-rows",
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) > 50 or any(not k or len(k) > 64 or len(v) > 256 for k, v in tags.items()):
            raise ValueError("at most 50 tags; keys are 1-64 characters, values up to 256")
        return tags


class JobProgress(BaseModel):
    fraction: float = 0.0
    current: int | None = Field(None, description="rounds or trees done")
    total: int | None = None
    unit: str | None = Field(None, description="round (boosting) or tree (forests)")
    metric_name: str | None = None
    metric: float | None = Field(None, description="the current validation metric")
    eta_seconds: float | None = None


class TrainingJobRead(BaseModel):
    id: str
    model: str
    dataset: str
    target: str
    features: list[str]
    task: Task
    algorithm: str
    hyperparameters: dict[str, Any]
    validation: ValidationSpec
    parent: str | None
    tags: dict[str, str]
    distributed: bool | None = Field(None, description="whether the job trains across every worker")
    state: JobState
    cancel_requested: bool = False
    progress: JobProgress = JobProgress()
    metrics: dict[str, float] = {}
    error: str | None = None
    attempt: int = 0
    worker: str | None = None
    version_id: str | None = None
    created_at: datetime
    created_by: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
