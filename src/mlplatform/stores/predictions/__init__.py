"""The prediction log store (predictions and their feedback): picked from the database's backend."""

from __future__ import annotations

from collections.abc import Callable

from mlplatform.db import Database
from mlplatform.stores.predictions.base import (
    BatchRecord,
    FeedbackEntry,
    FeedbackHistoryEntry,
    LabelledPredictions,
    LoggedPrediction,
    LogRecord,
    PredictionLogStore,
    PredictionRecord,
    PredictionRef,
)


def _sql(database: Database) -> PredictionLogStore:
    from mlplatform.stores.predictions.sql import SqlPredictionLogStore

    return SqlPredictionLogStore(database)


BACKENDS: dict[str, Callable[[Database], PredictionLogStore]] = {"sqlite": _sql, "postgresql": _sql}


def create_prediction_log_store(database: Database) -> PredictionLogStore:
    """The store for `database`; nothing connects until first use."""
    try:
        backend = BACKENDS[database.backend]
    except KeyError:
        raise ValueError(f"database url: no prediction log store for {database.backend!r}") from None
    return backend(database)


__all__ = [
    "BatchRecord",
    "FeedbackEntry",
    "FeedbackHistoryEntry",
    "LabelledPredictions",
    "LogRecord",
    "LoggedPrediction",
    "PredictionLogStore",
    "PredictionRecord",
    "PredictionRef",
    "create_prediction_log_store",
]
