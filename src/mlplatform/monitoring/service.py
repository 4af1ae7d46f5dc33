"""Feedback, performance and drift checks per model and version, over the prediction log store."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO

import numpy as np
import structlog
from prometheus_client import Gauge

from mlplatform.clock import as_utc, utcnow
from mlplatform.datasets.service import DatasetService
from mlplatform.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from mlplatform.formats.base import ModelDescription, Task
from mlplatform.ids import new_id
from mlplatform.metrics import Metrics
from mlplatform.monitoring import performance, plot, references, timeline
from mlplatform.monitoring.drift import ReferenceProfile, compare
from mlplatform.monitoring.references import REFERENCE_ROWS, SAMPLE_SEED, Candidate, Signature
from mlplatform.monitoring.schemas import (
    FEEDBACK_MAX_ITEMS,
    DriftReportPage,
    DriftReportRead,
    DriftReportSummary,
    FeatureDriftRead,
    FeedbackCreate,
    FeedbackHistoryRead,
    FeedbackResult,
    PerformanceBucket,
    PerformanceRead,
    PerformanceTimelineRead,
    ReferenceRead,
    Trigger,
)
from mlplatform.monitoring.store import DriftStore, StoredReference
from mlplatform.registry.schemas import VersionRead
from mlplatform.registry.service import KeepReference, RegistryService, Upload
from mlplatform.registry.snapshot import VersionEntry
from mlplatform.stores.predictions import (
    FeedbackEntry,
    LabelledPredictions,
    PredictionLogStore,
    PredictionRef,
)

WINDOW = re.compile(r"^(?P<amount>[1-9][0-9]{0,3})(?P<unit>[mhd])$")
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
DEFAULT_WINDOW = "24h"
MAX_WINDOW = timedelta(days=366)
MAX_LABELLED = 1_000_000  # labelled predictions one performance request reads at most (the newest)
CURRENT_ROWS = 100_000  # logged predictions a drift check samples from its window at most
DRIFT_ALPHA = 0.05
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ArmData:
    """One experiment variant's logged traffic and labels, for its results."""

    predictions: int
    latencies: list[float]  # ms, per request (a batch counts once), the newest
    recent: list[Any]  # the newest predicted values
    recent_requests: list[str | None]  # and the request_id each was logged with
    recent_ids: list[str]  # and each one's prediction id
    labelled: LabelledPredictions


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


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (PostgreSQL refuses them): such a number becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _compare(profile: dict[str, Any], signature: Signature, rows: list[list[Any]]) -> dict[str, Any]:
    """Logged rows (signature order) against the reference profile (blocking: run it in a thread)."""
    width = len(signature)
    rows = [row for row in rows if len(row) == width]
    matrix = np.empty((len(rows), width), dtype=object)
    if rows:
        matrix[:] = rows
    columns = {name: matrix[:, i] for i, (name, _) in enumerate(signature)}
    report = compare(ReferenceProfile.from_dict(profile), columns, alpha=DRIFT_ALPHA, seed=SAMPLE_SEED)
    return dict(_finite(report.to_dict()))


class MonitoringService:
    def __init__(
        self,
        *,
        store: PredictionLogStore,
        registry: RegistryService,
        metrics: Metrics,
        drift: DriftStore,
        datasets: DatasetService,
    ) -> None:
        self.store = store
        self.registry = registry
        self.drift = drift
        self.datasets = datasets
        self.accuracy = Gauge(
            "ml_model_accuracy",
            "Accuracy over the last computed window of labelled predictions, by model",
            ["model_id"],
            registry=metrics.registry,
            multiprocess_mode="livemostrecent",
        )
        self.drift_score = Gauge(
            "ml_feature_drift_score",
            "1 - the Holm-adjusted p-value of the feature in the model's latest drift check "
            "(above 1 - alpha: the feature drifted)",
            ["model_id", "feature"],
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

    def _version(self, model: str, version: str | int | None) -> VersionEntry:
        """A version of `model` by number or full id; None: what the bare name resolves to."""
        version = str(version) if version is not None else None
        entry = self.registry.resolve(
            f"{model}/{version}" if version and version.isdigit() else version or model
        )
        if entry.name != model:
            problem = f"version {version!r} is not a version of {model!r}"
            raise NotFound(problem, details={"field": "version", "problem": problem})
        return entry

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
        entry = self._version(model, version)
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

    async def performance_over_time(
        self,
        *,
        model: str,
        version: str | None = None,
        window: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str | None = None,
    ) -> PerformanceTimelineRead:
        """`performance`'s headline numbers for each time bucket of the window (`timeline.bucket_size`:
        given, or from the window's length), oldest first: the window's labelled predictions are read once
        and split by prediction time. Sets no gauge: a bucket is not the model's current accuracy."""
        start, end = window_bounds(window, start, end, utcnow())
        size_name, size = timeline.bucket_size(bucket, end - start)
        entry = self._version(model, version)
        version_id = entry.id if version else None
        spans = timeline.bounds(start, end, size)
        edges = [low for low, _ in spans] + [end]
        counts = await self.store.counts(model=model, version=version_id, edges=edges)
        data = await self.store.labelled(
            model=model, version=version_id, start=start, end=end, limit=MAX_LABELLED, probabilities=False
        )
        regression = entry.description.task == Task.REGRESSION

        def scored(low: datetime, high: datetime, counted: int, rows: list[int]) -> PerformanceBucket:
            found = PerformanceBucket(
                start=low,
                end=high,
                predictions=counted,
                labelled=len(rows),
                label_coverage=len(rows) / counted if counted else None,
            )
            if rows:
                actual = [data.actual[r] for r in rows]
                predicted = [data.predicted[r] for r in rows]
                if regression:
                    found.mae, found.rmse = performance.error_scores(actual, predicted)
                else:
                    found.accuracy, found.f1_macro = performance.label_scores(actual, predicted)
            return found

        by_bucket: list[list[int]] = [[] for _ in spans]
        for row, at in enumerate(data.predicted_at):
            by_bucket[bisect.bisect_right(edges, at) - 1].append(row)
        buckets = [
            scored(low, high, counted, rows)
            for (low, high), counted, rows in zip(spans, counts, by_bucket, strict=True)
        ]
        return PerformanceTimelineRead(
            model=model,
            version=version_id,
            task=str(entry.description.task),
            start=start,
            end=end,
            bucket=size_name,
            total=scored(start, end, sum(counts), list(range(len(data)))),
            buckets=buckets,
            labelled_limit_reached=len(data) >= MAX_LABELLED,
        )

    # --- one arm of an experiment ---------------------------------------------------------------------------

    async def arm(
        self,
        *,
        model: str,
        experiment: str,
        variant: str,
        version_id: str,
        start: datetime,
        end: datetime | None,
        recent: int = 10_000,
    ) -> ArmData:
        """What an experiment's variant answered (from the prediction log: requests, latencies, the newest
        `recent` predictions) and its labelled predictions (its version's, made while the experiment ran)."""
        arm = (experiment, variant)
        count = await self.store.count(model=model, start=start, end=end, arm=arm)
        latencies = await self.store.latencies(model=model, start=start, end=end, arm=arm)
        logged = await self.store.query(model=model, start=start, end=end, limit=recent, arm=arm)
        labelled = await self.store.labelled(
            model=model, version=version_id, start=start, end=end, limit=MAX_LABELLED
        )
        values, requests = [e.prediction for e in logged], [e.request_id for e in logged]
        return ArmData(count, latencies, values, requests, [e.prediction_id for e in logged], labelled)

    # --- drift: reference samples ------------------------------------------------------------------------

    async def prepare_reference(self, description: ModelDescription, upload: Upload) -> KeepReference | None:
        """The registry's hook at registration: the `reference` part, else `metadata.reference_sample`, else
        the training dataset the metadata names. A problem with the `reference` part refuses the upload. The
        other two are used when they fit and skipped with a warning otherwise: the sample's first use is the
        compile check (a few rows do), and lineage may name a dataset this server does not hold."""
        signature = [(f.name, f.type) for f in description.features]
        meta = upload.metadata
        if upload.reference is not None:
            candidate = await self._from_file(upload.reference, signature, "reference")
            return self._keeper(candidate, *await asyncio.to_thread(references.profile, candidate, signature))
        try:
            if meta.reference_sample:
                columns = references.from_matrix(meta.reference_sample, signature)
                rows = len(meta.reference_sample)
                candidate = Candidate("metadata", "metadata.reference_sample", columns, rows)
            elif meta.training_dataset_id:
                field = "training_dataset_id"
                candidate = await self._from_dataset(meta.training_dataset_id, signature, field)
            else:
                return None
            return self._keeper(candidate, *await asyncio.to_thread(references.profile, candidate, signature))
        except InvalidInput as exc:
            log.warning("version registered without a reference sample for drift", reason=exc.message[:300])
            return None

    def _keeper(self, candidate: Candidate, profile: ReferenceProfile, rows: int) -> KeepReference:
        async def keep(created: VersionRead) -> None:
            await self._store_reference(created, candidate, profile, rows, created.created_by)

        return keep

    async def set_reference(
        self,
        *,
        model: str,
        version: int,
        actor: str,
        file: BinaryIO | None = None,
        dataset: str | None = None,
        rows: Sequence[dict[str, Any]] | None = None,
    ) -> ReferenceRead:
        """Replace the version's reference with exactly one of: a CSV/Parquet file, a dataset, JSON rows."""
        found = await self.registry.get_version(model, version)
        signature = [(f.name, f.type) for f in found.features]
        if file is not None:
            candidate = await self._from_file(file, signature, "file")
        elif dataset is not None:
            candidate = await self._from_dataset(dataset, signature, "dataset")
        elif rows is not None:
            columns = references.from_records(rows, signature, "rows")
            candidate = Candidate("rows", "rows", columns, len(rows))
        else:
            raise InvalidInput(
                "give a file, a dataset or rows", details=[{"field": "body", "problem": "empty"}]
            )
        profile, profiled = await asyncio.to_thread(references.profile, candidate, signature)
        await self._store_reference(found, candidate, profile, profiled, actor)
        log.info("reference set", model=model, version=version, source=candidate.source, rows=profiled)
        return await self.reference(model=model, version=version)

    async def _from_file(self, source: BinaryIO, signature: Signature, field: str) -> Candidate:
        names = [name for name, _ in signature]
        table = await self.datasets.sample_upload(
            source=source, columns=names, n=REFERENCE_ROWS, seed=SAMPLE_SEED, field=field
        )
        return Candidate("upload", field, table.columns, table.rows)

    async def _from_dataset(self, dataset_id: str, signature: Signature, field: str) -> Candidate:
        names = [name for name, _ in signature]
        try:
            table = await self.datasets.sample(
                dataset_id=dataset_id, columns=names, n=REFERENCE_ROWS, seed=SAMPLE_SEED, field=field
            )
        except NotFound as exc:
            detail = {"field": field, "problem": exc.message}
            raise InvalidInput(f"{field}: {exc.message}", details=[detail]) from None
        return Candidate("dataset", field, table.columns, table.rows, dataset_id=dataset_id)

    async def _store_reference(
        self, version: VersionRead, candidate: Candidate, profile: ReferenceProfile, rows: int, actor: str
    ) -> None:
        await self.drift.put_reference(
            StoredReference(
                version_id=version.id,
                model=version.name,
                version=version.version,
                source=candidate.source,
                dataset_id=candidate.dataset_id,
                rows=rows,
                source_rows=candidate.source_rows,
                profile=profile.to_dict(),
                created_at=utcnow(),
                created_by=actor,
            )
        )

    async def last_predictions(self, *, models: Sequence[str]) -> dict[str, datetime]:
        """When each model last answered a prediction (logged), by name; models never used are left out."""
        return await self.store.last_predictions(models)

    async def reference(self, *, model: str, version: int) -> ReferenceRead:
        found = await self.registry.get_version(model, version)
        stored = await self.drift.get_reference(found.id)
        if stored is None:
            raise NotFound(_no_reference(model, version), details={"field": "version"})
        return ReferenceRead(
            model=model,
            version=version,
            version_id=found.id,
            source=stored.source,
            dataset_id=stored.dataset_id,
            rows=stored.rows,
            source_rows=stored.source_rows,
            features=references.summary(stored.profile),
            created_at=stored.created_at,
            created_by=stored.created_by,
        )

    # --- drift: checks and reports -----------------------------------------------------------------------

    async def check_drift(
        self,
        *,
        model: str,
        version: str | int | None = None,
        window: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        trigger: Trigger = "manual",
    ) -> DriftReportRead:
        """Compare a uniform sample (at most CURRENT_ROWS) of the version's predictions logged in the window
        with its reference; store the report, set `ml_feature_drift_score{model_id,feature}`, return it.
        Without a version: the version the bare name resolves to. No reference: `Conflict`."""
        start, end = window_bounds(window, start, end, utcnow())
        entry = self._version(model, version)
        stored = await self.drift.get_reference(entry.id)
        if stored is None:
            raise Conflict(_no_reference(model, entry.version), details={"field": "version"})
        rows = await self.store.sample_inputs(
            model=model, version=entry.id, start=start, end=end, n=CURRENT_ROWS, seed=SAMPLE_SEED
        )
        signature = [(f.name, f.type) for f in entry.description.features]
        result = await asyncio.to_thread(_compare, stored.profile, signature, rows)
        report = DriftReportRead(
            id=new_id(),
            model=model,
            version=entry.version,
            version_id=entry.id,
            start=start,
            end=end,
            trigger=trigger,
            created_at=utcnow(),
            status=result["status"],
            drift=result["drift"],
            drifted_features=result["drifted_features"],
            alpha=result["alpha"],
            tests=result["tests"],
            sampled_rows=len(rows),
            reference_rows=stored.rows,
            features=[FeatureDriftRead.model_validate(f) for f in result["features"]],
        )
        await self.drift.add_report(report)
        self._set_scores(report)
        log.info("drift checked", model=model, version=entry.version, drift=report.drift, rows=len(rows))
        return report

    def _set_scores(self, report: DriftReportRead) -> None:
        for feature in report.features:
            if feature.adjusted_p_value is not None:
                self.drift_score.labels(report.model, feature.feature).set(1.0 - feature.adjusted_p_value)
            else:
                with contextlib.suppress(KeyError):
                    self.drift_score.remove(report.model, feature.feature)

    async def latest_drift_report(
        self, *, model: str, version: str | int | None = None
    ) -> DriftReportRead | None:
        """The newest report of the model (any version), or of one version (number or full id)."""
        version_id = self._version(model, version).id if version is not None else None
        return await self.drift.latest_report(model=model, version_id=version_id)

    async def drift_reports(
        self, *, model: str, version: int | None = None, limit: int = 20, offset: int = 0
    ) -> DriftReportPage:
        items, total = await self.drift.list_reports(model=model, version=version, limit=limit, offset=offset)
        return DriftReportPage(items=items, total=total, limit=limit, offset=offset)

    async def latest_drift_summaries(self, *, models: Sequence[str]) -> dict[str, DriftReportSummary]:
        """The newest report of each model (any version), without per-feature results; by name."""
        return await self.drift.latest_summaries(models)

    async def drift_report(self, *, model: str, report_id: str) -> DriftReportRead:
        return await self.drift.get_report(model=model, report_id=report_id)

    async def drift_plot(self, *, model: str, report_id: str) -> bytes:
        """The report as a PNG, drawn on a worker thread."""
        report = await self.drift.get_report(model=model, report_id=report_id)
        return await asyncio.to_thread(plot.render, report)


def _no_reference(model: str, version: int) -> str:
    return (
        f"version {version} of {model!r} has no reference sample for drift checks: set one with "
        f"PUT /api/ml/models/{model}/versions/{version}/reference (a CSV or Parquet file, a dataset id or "
        "rows), or register the version with a `reference` part or a training_dataset_id"
    )
