"""Alert rule and alert request and response schemas (DESIGN §5)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
Severity = Literal["info", "warning", "critical"]
WINDOW_PATTERN = r"^[1-9][0-9]{0,3}[mhd]$"


class AlertState(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class RuleSource(StrEnum):
    DEFAULT = "default"  # derived from other settings (ml.monitoring.accuracy-threshold)
    CONFIG = "config"  # ml.monitoring.alerts.rules
    API = "api"  # POST /api/ml/alert-rules


class AlertRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:-]*$")
    kind: str = Field(description="accuracy_below, latency_p95_above, error_rate_above, log_drops")
    threshold: float = Field(0.0, description="accuracy (0-1), milliseconds, error rate (0-1) or drops")
    window: str = Field("1h", pattern=WINDOW_PATTERN, description="1h, 24h, 7d, …")
    severity: Severity = "warning"
    model: str | None = Field(None, max_length=128, description="one model; null: every deployed model")


class AlertRuleRead(AlertRuleCreate):
    id: str
    source: RuleSource
    created_at: datetime | None
    created_by: str | None


class AlertRead(BaseModel):
    id: str
    rule: str = Field(description="the rule's name")
    kind: str
    model: str | None = Field(description="null for an alert about the whole instance (log_drops)")
    severity: Severity
    state: AlertState
    value: float
    threshold: float
    message: str
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class CheckRunRead(BaseModel):
    """What one run of the checks did."""

    models: list[str]
    steps: dict[str, str] = Field(description="step name → ok, or the error it raised")
    firing: int = Field(description="alerts firing (or acknowledged) after the run")
    started: int = Field(description="alerts that started firing in this run")
    resolved: int = Field(description="alerts resolved in this run")
