"""Prediction request and response schemas (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from mlplatform.bounds import Text

REQUEST_ID_LENGTH = 128


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="any reference form: name, name@alias, name-vN, name/N or the full id")
    features: dict[str, Any] | list[Any] = Field(
        description="by feature name, or an array in signature order"
    )
    request_id: Text | None = Field(
        None, max_length=REQUEST_ID_LENGTH, description="your id, to join feedback later"
    )


@dataclass(frozen=True, slots=True)
class PredictInput:
    """A `PredictRequest` once checked, as the service reads it (a model object costs microseconds)."""

    model: str
    features: dict[str, Any] | list[Any]
    request_id: str | None = None


class PredictResponse(BaseModel):
    prediction_id: str
    model: str
    version: str
    experiment: str | None = Field(None, description="the experiment that picked the variant")
    variant: str | None = None
    prediction: Any
    probabilities: dict[str, float] | None = None
    confidence: float | None = None
    cached: bool = False
    fallback: bool = False
    latency_ms: float


_INSTANCES_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {"anyOf": [{"type": "object"}, {"type": "array"}]},
    "description": "objects keyed by feature name, or arrays in signature order",
}


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    # Each item is checked against the signature (`Signature.batch`); validating a thousand items here as
    # `dict | list` first would copy every row and cost milliseconds per batch.
    instances: Annotated[list[Any], WithJsonSchema(_INSTANCES_SCHEMA)] = Field(min_length=1)
    request_id: Text | None = Field(None, max_length=REQUEST_ID_LENGTH)


class BatchPrediction(BaseModel):
    prediction_id: str
    prediction: Any
    probabilities: dict[str, float] | None = None
    confidence: float | None = None


class BatchResponse(BaseModel):
    model: str
    version: str
    experiment: str | None = None
    variant: str | None = None
    predictions: list[BatchPrediction]
    latency_ms: float


class PredictionLogRead(BaseModel):
    prediction_id: str
    model: str
    version: str
    experiment: str | None = None
    variant: str | None
    request_id: str | None
    inputs: list[Any]
    prediction: Any
    probabilities: dict[str, float] | None
    confidence: float | None
    latency_ms: float
    cached: bool
    created_at: datetime


class LatencyRead(BaseModel):
    """Latency of answered requests in ms: percentiles estimated from the latency histogram's cells (linear
    within a cell, as Prometheus's histogram_quantile), and the exact mean. None without requests."""

    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


class ServingTotalsRead(BaseModel):
    predictions: int = Field(description="predictions answered (a batch counts each row)")
    requests: int = Field(description="requests answered (a batch counts once)")
    errors: int = Field(description="requests that failed (timeouts, model errors)")
    error_rate: float | None = Field(description="errors / (requests + errors); None without traffic")
    latency_ms: LatencyRead


class ServingPointRead(BaseModel):
    at: datetime = Field(description="start of the step")
    predictions: int
    requests: int
    errors: int
    p50: float | None
    p95: float | None
    p99: float | None


class ServingStatsRead(BaseModel):
    """A model's serving counts over a window, from every server process's saved per-minute counts and
    this process's latest ones."""

    model: str
    start: datetime = Field(description="inclusive, aligned to the step")
    end: datetime = Field(description="exclusive")
    step_seconds: int
    instances: int = Field(description="server processes that counted traffic for the model in the window")
    totals: ServingTotalsRead
    points: list[ServingPointRead]
