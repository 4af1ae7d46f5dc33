"""Training job request and response schemas."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictFloat,
    StrictInt,
    field_validator,
    model_serializer,
    model_validator,
)

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


DEFAULT_VALIDATION_FRACTION = 0.2


class ValidationSpec(BaseModel):
    """Either a share of the dataset's rows held out (0.2 when neither is given) or a second dataset."""

    model_config = ConfigDict(extra="forbid")

    fraction: float | None = Field(
        None, gt=0, lt=1, description="share of the rows held out for validation (default 0.2)"
    )
    dataset: Text | None = Field(
        None,
        max_length=64,
        description="a dataset id validated on instead (the job's target and features, same types); "
        "the whole training dataset is then trained on",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ValidationSpec:
        if self.fraction is not None and self.dataset is not None:
            raise ValueError("give either fraction or dataset, not both")
        if self.dataset is None and self.fraction is None:
            self.fraction = DEFAULT_VALIDATION_FRACTION
        return self


MAX_SEED = 2**31 - 1  # LightGBM's seed is a C int
SEED_DESCRIPTION = (
    "seeds the validation split, the estimator's random_state (unless the hyperparameters set it or "
    "its alias) and the drift reference sample: the same job on the same data trains the same model"
)
SearchStrategy = Literal["random", "grid", "tpe"]
TrialState = Literal["succeeded", "failed", "cancelled"]
Choice = str | bool | int | float | None
Bound = Annotated[StrictInt, Field(ge=-(2**53), le=2**53)]
MAX_TRIALS = 500  # also the largest grid


class SearchDimension(BaseModel):
    """One hyperparameter's range: exactly one of `int`, `float` (closed ranges) or `choice`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    int_range: tuple[Bound, Bound] | None = Field(None, alias="int", description="[low, high], both included")
    float_range: tuple[StrictFloat, StrictFloat] | None = Field(
        None, alias="float", description="[low, high]"
    )
    choice: list[Choice] | None = Field(None, min_length=1, max_length=100)
    log: bool = Field(False, description="sample a range on a log scale (its low must be > 0)")

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        kinds = [k for k in (self.int_range, self.float_range, self.choice) if k is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of int: [low, high], float: [low, high] or choice: [values]")
        bounds = self.int_range or self.float_range
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError("low is above high")
        if self.float_range is not None and not all(map(math.isfinite, self.float_range)):
            raise ValueError("the range must be finite")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log needs a range whose low is above 0")
        if self.choice is not None and len({repr(c) for c in self.choice}) != len(self.choice):
            raise ValueError("choices repeat")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_kinds(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: SearchStrategy = "random"
    space: dict[Text, SearchDimension] = Field(
        min_length=1,
        max_length=50,
        description="hyperparameter → its range (the job's own stay fixed)",
    )
    trials: int | None = Field(
        None, ge=1, le=MAX_TRIALS, description="default 20 (random, tpe) or the grid's size"
    )
    metric: str | None = Field(None, max_length=32, description="the metric to optimise; default f1 or rmse")
    parallel: int | None = Field(
        None, ge=1, le=256, description="trials at once; default every worker thread"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the random and TPE samplers")


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
    search: SearchSpec | None = Field(None, description="try many hyperparameters, register the best")
    seed: int = Field(0, ge=0, le=MAX_SEED, description=SEED_DESCRIPTION)
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
    seed: int = Field(0, description=SEED_DESCRIPTION)
    state: JobState
    cancel_requested: bool = False
    progress: JobProgress = JobProgress()
    metrics: dict[str, float] = {}
    timings: dict[str, float] = Field(
        {},
        description="a succeeded job's seconds per phase of its last run: read (the dataset read and split), "
        "fit, evaluate (validation metrics), save (the artifact and the drift reference), register",
    )
    error: str | None = None
    attempt: int = 0
    worker: str | None = None
    version_id: str | None = None
    created_at: datetime
    created_by: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    search: SearchSpec | None = None
    lease_owner: str | None = Field(None, description="the server instance following the job while it runs")
    lease_expires_at: datetime | None = None
    resumed_from: int | None = Field(None, description="the checkpoint round the latest run resumed from")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class TrainingTrialRead(BaseModel):
    """One trial of a job's search: the hyperparameters it tried and how they did on the validation rows."""

    number: int = Field(description="0, 1, … in the order the trials were started")
    params: dict[str, Any] = Field(description="the searched hyperparameters (the job's own ones apply too)")
    state: TrialState
    metrics: dict[str, float] = {}
    value: float | None = Field(None, description="the search metric")
    best: bool = False
    error: str | None = None
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
