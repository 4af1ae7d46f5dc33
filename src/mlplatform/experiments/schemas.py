"""Experiment request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlplatform.bounds import Text

T = TypeVar("T")
ExperimentType = Literal["ab", "canary", "shadow"]
ExperimentState = Literal["running", "promoted", "stopped", "rolled_back"]
Metric = Literal["accuracy", "error_rate", "latency_p95", "mae", "rmse"]
# Whether a larger value of the metric is better (the direction a winner is picked in).
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "error_rate": False,
    "latency_p95": False,
    "mae": False,
    "rmse": False,
}
VARIANT_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
STICKY = r"^(request_id|random|header:[A-Za-z0-9-]{1,64}|field:[A-Za-z0-9_.-]{1,128})$"
WEIGHT_TOLERANCE = 1e-6


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(pattern=VARIANT_NAME, description="lower-case letters, digits, _ . -")
    version: Text = Field(max_length=300, description="a version reference: 3, @production, name/3 …")
    weight: float | None = Field(
        None, ge=0, le=100, description="percent of traffic (ab); the mirrored percent (shadow's second)"
    )


class CanarySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field([5, 25, 50, 100], min_length=1, max_length=20)
    step_min_samples: int = Field(100, ge=1, le=10**9)
    step_min_seconds: float = Field(300, ge=0, le=30 * 86400)
    max_degradation: float = Field(
        0.1,
        gt=0,
        le=10,
        description="relative: 0.1 rolls back when the canary is 10 % worse than the baseline",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps) or any(
            b <= a for a, b in zip(steps, steps[1:], strict=False)
        ):
            raise ValueError("steps are increasing percentages in (0, 100]")
        if steps[-1] != 100:
            raise ValueError("the last step is 100 (all traffic on the canary)")
        return steps


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=128)
    model: Text = Field(max_length=128, description="a registered model name")
    type: ExperimentType
    variants: list[VariantSpec] = Field(min_length=2, max_length=10)
    sticky: str = Field(
        "request_id",
        pattern=STICKY,
        description="what keeps a caller on one variant: request_id (random without one), random, "
        "header:NAME or field:NAME (a feature)",
    )
    metric: Metric = "error_rate"
    min_samples: int = Field(1000, ge=1, le=10**9, description="per variant, before a result is declared")
    min_effect: float | None = Field(
        None, gt=0, description="the smallest difference worth finding (default: 10 % of the control's value)"
    )
    alpha: float = Field(0.05, gt=0, lt=0.5)
    max_duration_seconds: float | None = Field(None, gt=0, le=365 * 86400)
    canary: CanarySpec | None = None


class VariantRead(BaseModel):
    name: str
    version: str = Field(description="the version's full id, pinned at creation")
    weight: float = Field(description="percent of traffic now (shadow: percent mirrored)")


class ExperimentRead(BaseModel):
    id: str
    name: str
    model: str
    type: ExperimentType
    state: ExperimentState
    variants: list[VariantRead]
    sticky: str
    metric: Metric
    min_samples: int
    min_effect: float | None
    alpha: float
    max_duration_seconds: float | None
    canary: CanarySpec | None
    step: int = Field(0, description="the canary's current step (index into canary.steps)")
    step_started_at: datetime | None = None
    winner: str | None = None
    reason: str | None = None
    created_at: datetime
    created_by: str
    ended_at: datetime | None = None
    ended_by: str | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: Text | None = Field(None, description="default: the recommended winner")


class Estimate(BaseModel):
    value: float | None
    low: float | None = Field(None, description="the confidence interval at 1 - alpha")
    high: float | None = None


class VariantResults(BaseModel):
    name: str
    version: str
    weight: float
    requests: int = Field(description="predictions logged for the variant (the log's sampling applies)")
    errors: int = Field(description="failed requests routed to the variant, on every instance")
    error_rate: Estimate
    latency_ms: dict[str, Estimate] = Field(description="p50, p95, p99 per request, with intervals")
    predictions: dict[str, int] = Field(description="the newest predictions' values and counts (top 20)")
    labelled: int
    metrics: dict[str, Estimate] = Field(description="accuracy, or mae and rmse, from feedback")
    agreement: Estimate | None = Field(
        None,
        description="a shadow's: the share of mirrored rows it answered as the answer given",
    )
    compared: int | None = Field(None, description="a shadow's: mirrored rows compared with the answer given")
    mean_abs_difference: float | None = Field(
        None, description="a shadow's, for numeric answers: the mean |shadow − answer given|"
    )


class Comparison(BaseModel):
    variant: str
    control: str
    metric: str
    samples: tuple[int, int] = Field(description="observations of the metric: control, variant")
    difference: float | None = Field(None, description="variant − control")
    interval: Estimate = Field(description="the always-valid confidence sequence of the difference")
    p_value: float | None = Field(None, description="always valid: may be looked at any time")
    fixed_horizon_p_value: float | None = Field(
        None, description="the textbook test's (valid only for one look at a sample size fixed in advance)"
    )
    test: str
    significant: bool
    better: bool | None = Field(None, description="whether the variant is better, when significant")


class ExperimentResults(BaseModel):
    experiment: str
    metric: str
    alpha: float
    min_effect: float | None
    variants: list[VariantResults]
    comparisons: list[Comparison]
    recommendation: Literal["winner", "no_detectable_difference", "keep_running"]
    winner: str | None = None
    more_samples: int | None = Field(None, description="per variant, when the advice is to keep running")
    reason: str
