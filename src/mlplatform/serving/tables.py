"""Prediction logs: every (sampled) prediction with its inputs, output, version and latency."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mlplatform.db import Base


class PredictionLogRow(Base):
    __tablename__ = "prediction_logs"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    inputs: Mapped[list[Any]] = mapped_column(JSON)
    prediction: Mapped[Any] = mapped_column(JSON)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    confidence: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_prediction_logs_model_created_at", "model", "created_at"),
        Index("ix_prediction_logs_request_id", "request_id"),
    )
