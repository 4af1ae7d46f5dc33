"""Prediction logs: every (sampled) prediction with its inputs, output, version and latency."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mlplatform.db import Base

# Only predictions a client gave a request_id are indexed by it (most have none): see migration 0006.
_GIVEN = text("request_id IS NOT NULL")


class PredictionLogRow(Base):
    """One single-row prediction."""

    __tablename__ = "prediction_logs"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(64))
    experiment: Mapped[str | None] = mapped_column(String(26))  # the experiment that chose the variant
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
        Index("ix_prediction_logs_request_id", "request_id", postgresql_where=_GIVEN, sqlite_where=_GIVEN),
    )


class PredictionBatchRow(Base):
    """Consecutive predictions of one batch request (or V2 infer), stored column-wise as one row.

    Their ids are one block of `ids.new_ids`: `id` is the first, `ids.block_ids(id, count)` all of them.
    Writing a thousand predictions as one row instead of a thousand keeps logging off the batch's critical
    path (what a KServe or Seldon payload logger does per request, but queryable per prediction).
    """

    __tablename__ = "prediction_batches"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(200))
    variant: Mapped[str | None] = mapped_column(String(64))
    experiment: Mapped[str | None] = mapped_column(String(26))  # the experiment that chose the variant
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Numeric inputs and all probabilities are stored as raw little-endian float64, row-major, `count` rows
    # (migration 0007): a tenth of the cost of JSON to write. Inputs holding strings stay JSON; rows written
    # before 0007 hold JSON in both.
    inputs: Mapped[list[list[Any]] | None] = mapped_column(JSON)
    inputs_f64: Mapped[bytes | None] = mapped_column(LargeBinary)
    predictions: Mapped[list[Any]] = mapped_column(JSON)
    classes: Mapped[list[str] | None] = mapped_column(JSON)  # the probability columns' labels
    probabilities: Mapped[list[list[float]] | None] = mapped_column(JSON)
    probabilities_f64: Mapped[bytes | None] = mapped_column(LargeBinary)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_prediction_batches_model_created_at", "model", "created_at"),
        Index("ix_prediction_batches_request_id", "request_id", postgresql_where=_GIVEN, sqlite_where=_GIVEN),
    )


# The latency histogram's cells (`serving.metrics.LATENCY_BUCKETS_MS`, then +Inf) as columns of the serving
# stats tables, so that the database adds them up over instances and periods. Changing the buckets needs a
# migration.
STAT_BUCKETS = 17
BUCKET_COLUMNS = tuple(f"b{i:02d}" for i in range(STAT_BUCKETS))


class ServingCounts:
    """The counts of a serving stats row: predictions (rows), failed requests, and the latency histogram's
    requests per cell (b00 = up to 0.1 ms, …, b15 = up to 10 s, b16 = slower), with their summed latency."""

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    period: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    predictions: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    latency_sum_ms: Mapped[float] = mapped_column(Float)
    b00: Mapped[int] = mapped_column(BigInteger)
    b01: Mapped[int] = mapped_column(BigInteger)
    b02: Mapped[int] = mapped_column(BigInteger)
    b03: Mapped[int] = mapped_column(BigInteger)
    b04: Mapped[int] = mapped_column(BigInteger)
    b05: Mapped[int] = mapped_column(BigInteger)
    b06: Mapped[int] = mapped_column(BigInteger)
    b07: Mapped[int] = mapped_column(BigInteger)
    b08: Mapped[int] = mapped_column(BigInteger)
    b09: Mapped[int] = mapped_column(BigInteger)
    b10: Mapped[int] = mapped_column(BigInteger)
    b11: Mapped[int] = mapped_column(BigInteger)
    b12: Mapped[int] = mapped_column(BigInteger)
    b13: Mapped[int] = mapped_column(BigInteger)
    b14: Mapped[int] = mapped_column(BigInteger)
    b15: Mapped[int] = mapped_column(BigInteger)
    b16: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ServingStatRow(ServingCounts, Base):
    """One server process's serving counts for one model in one minute (`period`: its start). Each process
    writes only its own rows, replacing a minute's row as the minute goes on, so the instances' rows add up to
    the cluster's counts."""

    __tablename__ = "serving_stats"
    __table_args__ = (Index("ix_serving_stats_period", "period"),)


class ServingStatHourRow(ServingCounts, Base):
    """The same counts per hour (`period`: its start), written with the minutes, so that a window of days
    reads a row an hour instead of sixty."""

    __tablename__ = "serving_stats_hourly"
    __table_args__ = (Index("ix_serving_stats_hourly_period", "period"),)
