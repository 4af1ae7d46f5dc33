"""Feedback, performance and drift request and response schemas (DESIGN §5)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, RootModel, WithJsonSchema, model_validator

from mlplatform.serving.schemas import REQUEST_ID_LENGTH

FEEDBACK_MAX_ITEMS = 10_000
LABEL_LENGTH = 256


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")
    if isinstance(value, str) and len(value) > LABEL_LENGTH:
        raise ValueError(f"at most {LABEL_LENGTH} characters")
    if not isinstance(value, bool | int | float | str):
        raise ValueError("a class label or a number: a string, number or boolean")
    return value


# A class label or a target value; which one the model needs is checked once the prediction is found.
Actual = Annotated[
    bool | int | float | str,
    PlainValidator(_scalar),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "maxLength": LABEL_LENGTH}, {"type": "number"}, {"type": "boolean"}]}
    ),
]


class FeedbackCreate(BaseModel):
    """The actual value (ground truth) of one prediction, named by `prediction_id` or by `request_id`."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str | None = Field(None, min_length=1, max_length=26, description="as predict answered it")
    request_id: str | None = Field(
        None,
        min_length=1,
        max_length=REQUEST_ID_LENGTH,
        description="the request_id given to predict; it must name one prediction (not a batch)",
    )
    actual: Actual = Field(description="classification: one of the model's classes; regression: a number")
    timestamp: datetime | None = Field(None, description="when the actual was observed; default: now")

    @model_validator(mode="after")
    def one_reference(self) -> Self:
        if (self.prediction_id is None) == (self.request_id is None):
            raise ValueError("give exactly one of prediction_id and request_id")
        return self


class FeedbackList(RootModel[list[FeedbackCreate]]):
    root: list[FeedbackCreate] = Field(min_length=1, max_length=FEEDBACK_MAX_ITEMS)


class FeedbackResult(BaseModel):
    accepted: int = Field(description="items stored (duplicates included)")
    duplicates: int = Field(description="accepted items that replaced an earlier actual value (last wins)")
    unknown: int = Field(description="items whose prediction_id or request_id names no logged prediction")
    unknown_ids: list[str] = Field(description="those ids, as given, in request order")


class FeedbackHistoryRead(BaseModel):
    actual: bool | int | float | str
    observed_at: datetime
    received_at: datetime
    actor: str | None
    superseded_at: datetime | None = Field(description="when a later value replaced it; null: current")


class ClassScores(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int = Field(description="labelled predictions whose actual value is this class")


class CalibrationBin(BaseModel):
    lower: float
    upper: float
    mean_predicted: float
    observed_frequency: float
    count: int


class ClassificationPerformance(BaseModel):
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    per_class: dict[str, ClassScores]
    with_probabilities: int = Field(description="labelled predictions that logged probabilities")
    roc_auc: float | None = Field(description="one-vs-rest, macro, for more than two classes")
    log_loss: float | None
    brier_score: float | None
    calibration_of: str | None = Field(
        description="binary: the positive (greater) class's probability; otherwise the top-label confidence"
    )
    calibration: list[CalibrationBin] | None = Field(description="10 uniform bins; empty bins left out")


class RegressionPerformance(BaseModel):
    mae: float
    rmse: float
    r2: float | None = Field(description="null with fewer than two labelled predictions")


class PerformanceRead(BaseModel):
    model: str
    version: str | None = Field(description="the version's full id, or null for every version")
    task: str | None
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    predictions: int = Field(description="predictions logged in the window")
    labelled: int = Field(description="of those, predictions with an actual value")
    label_coverage: float | None = Field(description="labelled / predictions")
    classification: ClassificationPerformance | None = None
    regression: RegressionPerformance | None = None


class PerformanceBucket(BaseModel):
    """One bucket's headline numbers: those of `GET …/monitoring?from=&to=` for the bucket's bounds."""

    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    predictions: int = Field(description="predictions logged in the bucket")
    labelled: int = Field(description="of those, predictions with an actual value")
    label_coverage: float | None = Field(description="labelled / predictions")
    accuracy: float | None = Field(None, description="classification; null without labels")
    f1_macro: float | None = Field(None, description="classification; null without labels")
    mae: float | None = Field(None, description="regression; null without labels")
    rmse: float | None = Field(None, description="regression; null without labels")


class PerformanceTimelineRead(BaseModel):
    """The model's performance per time bucket, oldest first."""

    model: str
    version: str | None = Field(description="the version's full id, or null for every version")
    task: str | None
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    bucket: str = Field(description="the bucket size: 1h, 6h, 1d, …")
    total: PerformanceBucket = Field(description="the same numbers for the whole window")
    buckets: list[PerformanceBucket] = Field(
        description="buckets start at whole multiples of the size in UTC; the first and last are cut to the "
        "window"
    )
    labelled_limit_reached: bool = Field(
        description="the window had more labelled predictions than one request reads (1,000,000): the "
        "oldest buckets count only those of the newest million"
    )


# --- drift: reference samples and reports ------------------------------------------------------------------

REFERENCE_ROWS_LIMIT = 10_000  # rows a JSON reference body may hold
ReferenceSource = Literal["upload", "dataset", "rows", "metadata"]
Trigger = Literal["manual", "scheduled"]


class ReferenceSet(BaseModel):
    """A JSON reference for `PUT …/reference`: a dataset's id, or rows keyed by feature name."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, min_length=1, max_length=64, description="a dataset id")
    rows: list[dict[str, Any]] | None = Field(
        None, min_length=1, max_length=REFERENCE_ROWS_LIMIT, description="objects keyed by feature name"
    )

    @model_validator(mode="after")
    def one_source(self) -> Self:
        if (self.dataset is None) == (self.rows is None):
            raise ValueError("give exactly one of dataset and rows")
        return self


class ProfileHistogram(BaseModel):
    """Numeric: `edges` e0..e_last bound the cells (-inf, e0], (e0, e1], ..., (e_last, inf), so there is one
    count more than edges. Categorical: one count per label."""

    counts: list[int]
    edges: list[float] | None = None
    labels: list[str] | None = None


class ReferenceFeatureRead(BaseModel):
    name: str
    kind: Literal["numeric", "categorical"]
    rows: int
    missing: int
    missing_rate: float | None
    histogram: ProfileHistogram


class ReferenceRead(BaseModel):
    """A version's reference sample, as its profile summarises it."""

    model: str
    version: int
    version_id: str
    source: ReferenceSource = Field(
        description="upload (a CSV/Parquet file), dataset (a stored dataset), rows (JSON rows), metadata "
        "(the upload's metadata.reference_sample)"
    )
    dataset_id: str | None
    rows: int = Field(description="rows profiled (a uniform sample when the source had more)")
    source_rows: int = Field(description="rows in the source")
    features: list[ReferenceFeatureRead]
    created_at: datetime
    created_by: str


class HistogramRead(BaseModel):
    """Reference and current counts in the same cells: numeric `edges` as in `ProfileHistogram`, or the
    categorical `labels` (levels new in the current window have reference count 0)."""

    reference: list[int]
    current: list[int]
    edges: list[float] | None = None
    labels: list[str] | None = None


class FeatureDriftRead(BaseModel):
    feature: str
    kind: Literal["numeric", "categorical"]
    status: Literal["ok", "insufficient_data"]
    reference_rows: int
    current_rows: int
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    missing_test: str | None = None
    reference_missing_rate: float | None = None
    current_missing_rate: float | None = None
    missing_p_value: float | None = None
    distance_name: str | None = Field(None, description="wasserstein_normalised or jensen_shannon")
    distance: float | None = None
    psi: float | None = None
    feature_p_value: float | None = Field(None, description="Bonferroni over this feature's two tests")
    drift: bool = Field(False, description="feature_p_value <= alpha")
    adjusted_p_value: float | None = Field(None, description="Holm over every test of every feature")
    drift_adjusted: bool = Field(False, description="adjusted_p_value <= alpha: counts for the model verdict")
    histogram: HistogramRead | None = None
    note: str | None = None


class DriftReportSummary(BaseModel):
    id: str
    model: str
    version: int
    version_id: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    trigger: Trigger
    created_at: datetime
    status: Literal["ok", "insufficient_data"]
    drift: bool = Field(description="some feature drifted after Holm's correction over all tests")
    drifted_features: list[str]
    alpha: float
    tests: int
    sampled_rows: int = Field(description="logged predictions of the window sampled for the check")
    reference_rows: int


class DriftReportRead(DriftReportSummary):
    features: list[FeatureDriftRead]


class DriftReportPage(BaseModel):
    items: list[DriftReportSummary]
    total: int
    limit: int
    offset: int
