"""Feedback ingestion and performance per model and version, over the prediction log store."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Gauge

from mlplatform.clock import as_utc, utcnow
from mlplatform.errors import InvalidInput, NotFound, PayloadTooLarge
from mlplatform.formats.base import ModelDescription, Task
from mlplatform.metrics import Metrics
from mlplatform.monitoring import performance
from mlplatform.monitoring.schemas import (
    FEEDBACK_MAX_ITEMS,
    FeedbackCreate,
    FeedbackHistoryRead,
    FeedbackResult,
    PerformanceRead,
)
from mlplatform.registry.service import RegistryService
from mlplatform.stores.predictions import FeedbackEntry, PredictionLogStore, PredictionRef

WINDOW = re.compile(r"^(?P<amount>[1-9][0-9]{0,3})(?P<unit>[mhd])$")
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
DEFAULT_WINDOW = "24h"
MAX_WINDOW = timedelta(days=366)
MAX_LABELLED = 1_000_000  # labelled predictions one performance request reads at most (the newest)


def window_bounds(
    window: str | None, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """`[from, to)`: `to` defaults to now, `from` to `to` minus `window` (default 24h)."""
    end = as_utc(end) if end is not None else now
    if start is not None:
        start = as_utc(start)
    else:
        match = WINDOW.match(window or DEFAULT_WINDOW)
        if match is None:
            problem = "a number and a unit, m, h or d (e.g. 1h, 24h, 7d)"
            raise InvalidInput(f"window: {problem}", details=[{"field": "window", "problem": problem}])
        start = end - int(match["amount"]) * UNITS[match["unit"]]
    if start >= end:
        raise InvalidInput("from must be before to", details=[{"field": "from", "problem": "not before to"}])
    if end - start > MAX_WINDOW:
        problem = f"at most {MAX_WINDOW.days} days"
        raise InvalidInput(f"window: {problem}", details=[{"field": "window", "problem": problem}])
    return start, end


def checked_actual(actual: Any, description: ModelDescription | None) -> tuple[Any, str | None]:
    """The actual value as stored (a class label in the model's own type), or a problem.

    Classification: one of the model's classes, as itself or as its string form ("1" for the class 1).
    Regression: a finite number (not a boolean). A version the registry no longer knows takes any value."""
    if isinstance(actual, float) and not math.isfinite(actual):
        return None, "not a finite number"
    if description is None:
        return actual, None
    if description.task == Task.REGRESSION:
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return None, f"a number for regression model {description.flavour or 'of this version'}"
        return actual, None
    classes = description.classes or ()
    for label in classes:
        if type(label) is type(actual) and label == actual:
            return label, None
    for label in classes:
        if str(label) == str(actual):
            return label, None
    shown = ", ".join(repr(c) for c in classes[:20])
    return None, f"not one of the model's classes ({shown})"


class MonitoringService:
    def __init__(self, *, store: PredictionLogStore, registry: RegistryService, metrics: Metrics) -> None:
        self.store = store
        self.registry = registry
        self.accuracy = Gauge(
            "ml_model_accuracy",
            "Accuracy over the last computed window of labelled predictions, by model",
            ["model_id"],
            registry=metrics.registry,
            multiprocess_mode="livemostrecent",
        )

    # --- feedback ----------------------------------------------------------------------------------------

    async def add_feedback(self, *, items: Sequence[FeedbackCreate], actor: str | None) -> FeedbackResult:
        """Resolve every id in bulk, check every label, then store all of it or nothing."""
        if len(items) > FEEDBACK_MAX_ITEMS:
            too_many = f"at most {FEEDBACK_MAX_ITEMS} feedback items per request"
            raise PayloadTooLarge(too_many, details=[{"field": "body", "problem": too_many}])
        by_id = await self.store.resolve([i.prediction_id for i in items if i.prediction_id is not None])
        by_request = await self.store.resolve_requests(
            [i.request_id for i in items if i.request_id is not None]
        )
        now = utcnow()
        entries: list[FeedbackEntry] = []
        unknown: list[str] = []
        problems: list[dict[str, str]] = []
        descriptions: dict[str, ModelDescription | None] = {}
        for index, item in enumerate(items):
            ref, problem = self._find(item, by_id, by_request)
            if problem is not None:
                problems.append({"field": f"{index}.request_id", "problem": problem})
                continue
            if ref is None:
                unknown.append(item.prediction_id or item.request_id or "")
                continue
            if ref.version not in descriptions:
                descriptions[ref.version] = self._description(ref.version)
            actual, problem = checked_actual(item.actual, descriptions[ref.version])
            if problem is not None:
                problems.append({"field": f"{index}.actual", "problem": problem})
                continue
            observed_at = as_utc(item.timestamp) if item.timestamp is not None else now
            entries.append(FeedbackEntry(prediction=ref, actual=actual, observed_at=observed_at))
        if problems:
            summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
            raise InvalidInput(f"invalid feedback, nothing was stored: {summary}", details=problems)
        replaced = await self.store.add_feedback(entries, received_at=now, actor=actor)
        return FeedbackResult(
            accepted=len(entries), duplicates=len(replaced), unknown=len(unknown), unknown_ids=unknown
        )

    @staticmethod
    def _find(
        item: FeedbackCreate, by_id: dict[str, PredictionRef], by_request: dict[str, list[PredictionRef]]
    ) -> tuple[PredictionRef | None, str | None]:
        if item.prediction_id is not None:
            return by_id.get(item.prediction_id), None
        refs = by_request.get(item.request_id or "", [])
        if len(refs) > 1:
            return None, "names several predictions (a batch, or a reused id): send their prediction_id"
        return (refs[0] if refs else None), None

    def _description(self, version_id: str) -> ModelDescription | None:
        try:
            return self.registry.resolve(version_id).description
        except (NotFound, InvalidInput):  # a deleted version: labels are taken as they come
            return None

    async def feedback_history(self, *, prediction_id: str) -> list[FeedbackHistoryRead]:
        history = await self.store.feedback_history(prediction_id)
        if not history:
            raise NotFound(
                f"no feedback for prediction {prediction_id!r}", details={"field": "prediction_id"}
            )
        return [
            FeedbackHistoryRead(
                actual=entry.actual,
                observed_at=entry.observed_at,
                received_at=entry.received_at,
                actor=entry.actor,
                superseded_at=entry.superseded_at,
            )
            for entry in history
        ]

    # --- performance -------------------------------------------------------------------------------------

    async def performance(
        self,
        *,
        model: str,
        version: str | None = None,
        window: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> PerformanceRead:
        """Metrics of the model's (or one version's) labelled predictions made in the window. Without a
        version, `ml_model_accuracy{model_id}` is set from the accuracy computed."""
        start, end = window_bounds(window, start, end, utcnow())
        entry = self.registry.resolve(
            f"{model}/{version}" if version and version.isdigit() else version or model
        )
        if entry.name != model:
            problem = f"version {version!r} is not a version of {model!r}"
            raise NotFound(problem, details={"field": "version", "problem": problem})
        version_id = entry.id if version else None
        counted = await self.store.count(model=model, version=version_id, start=start, end=end)
        data = await self.store.labelled(
            model=model, version=version_id, start=start, end=end, limit=MAX_LABELLED
        )
        description = entry.description
        result = PerformanceRead(
            model=model,
            version=version_id,
            task=str(description.task),
            start=start,
            end=end,
            predictions=counted,
            labelled=len(data),
            label_coverage=len(data) / counted if counted else None,
        )
        if not len(data):
            return result
        if description.task == Task.REGRESSION:
            result.regression = performance.regression(data)
        else:
            result.classification = performance.classification(data, description.classes)
            if version_id is None:
                self.accuracy.labels(model).set(result.classification.accuracy)
        return result
