"""Feedback (actual values for logged predictions, with their history), drift references and drift reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mlplatform.db import Base

# The current value of a prediction's feedback; superseded rows stay as its audit history.
_CURRENT = text("superseded_at IS NULL")


class FeedbackRow(Base):
    """One actual value for one prediction. The prediction's model, version, time and place in the log
    (`block_id`, `position`, `batched`) are copied here when it is received, so a window's labels are
    found without reading the log, and its predictions are then read by primary key."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(String(26))
    block_id: Mapped[str] = mapped_column(String(26))
    position: Mapped[int] = mapped_column(Integer)
    batched: Mapped[bool] = mapped_column(Boolean)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(200))
    predicted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actual: Mapped[Any] = mapped_column(JSON)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(128))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_feedback_prediction_id", "prediction_id"),
        Index(
            "uq_feedback_current",
            "prediction_id",
            unique=True,
            postgresql_where=_CURRENT,
            sqlite_where=_CURRENT,
        ),
        Index(
            "ix_feedback_model_predicted_at",
            "model",
            "predicted_at",
            postgresql_where=_CURRENT,
            sqlite_where=_CURRENT,
        ),
    )


class DriftReferenceRow(Base):
    """A version's reference sample for drift checks, as its profile (`ReferenceProfile.to_dict`); one per
    version, replaced when a new one is set."""

    __tablename__ = "drift_references"

    version_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    dataset_id: Mapped[str | None] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    source_rows: Mapped[int] = mapped_column(Integer)
    profile: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))


class DriftReportRow(Base):
    """One drift check of a version over a window: the model verdict in columns, each feature's in JSON."""

    __tablename__ = "drift_reports"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    version_id: Mapped[str] = mapped_column(String(200))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    trigger: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(32))
    drift: Mapped[bool] = mapped_column(Boolean)
    drifted_features: Mapped[Any] = mapped_column(JSON)
    alpha: Mapped[float] = mapped_column(Float)
    tests: Mapped[int] = mapped_column(Integer)
    sampled_rows: Mapped[int] = mapped_column(Integer)
    reference_rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[Any] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_drift_reports_model_created_at", "model", "created_at"),
        Index("ix_drift_reports_version_id_created_at", "version_id", "created_at"),
    )
