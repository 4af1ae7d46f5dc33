"""Feedback and performance request and response schemas (DESIGN §5)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Self

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
