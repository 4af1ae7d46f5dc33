"""Feedback: the actual values (ground truth) received for logged predictions, with their history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, String, text
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
