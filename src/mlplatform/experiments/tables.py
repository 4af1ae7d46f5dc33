"""Experiments: what each compares, its current weights and step, and how it ended."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mlplatform.db import Base


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # name, version id, weight now
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # sticky, metric, min_samples, alpha, canary, …
    step: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    winner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    __table_args__ = (
        # One running experiment per model, enforced by the database on every instance.
        Index(
            "ux_experiments_running_model",
            "model",
            unique=True,
            postgresql_where=text("state = 'running'"),
            sqlite_where=text("state = 'running'"),
        ),
        Index("ix_experiments_model_created_at", "model", "created_at"),
        Index("ix_experiments_created_at", "created_at"),
    )


class ExperimentTallyRow(Base):
    """One server process's running totals for one variant: what is counted in memory on the predict path
    (failed requests, shadow agreement), saved every few seconds so every instance's results add them up.
    Each process writes only its own rows (cumulative since it started), so nothing is counted twice."""

    __tablename__ = "experiment_tallies"

    experiment_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    compared: Mapped[int] = mapped_column(BigInteger)  # shadow rows compared with the answer given
    agreed: Mapped[int] = mapped_column(BigInteger)
    difference_sum: Mapped[float] = mapped_column(Float)  # sum of |shadow − answer| over numeric rows
    numeric: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
