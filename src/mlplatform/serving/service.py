"""The predict path (DESIGN §7): resolve → cache → runtime (with a deadline) → fallback → log → metrics."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import structlog

from mlplatform.clock import utcnow
from mlplatform.errors import DeadlineExceeded, InvalidInput, NotFound, Unavailable
from mlplatform.ids import BLOCK, new_block, new_id, new_ids
from mlplatform.registry.refs import parse_ref
from mlplatform.registry.service import RegistryService
from mlplatform.registry.snapshot import Route, VersionEntry
from mlplatform.serving.logs import BatchRecord, PredictionLogWriter, PredictionRecord
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.model_cache import LoadedModel, ModelCache
from mlplatform.serving.prediction_cache import PredictionCache
from mlplatform.serving.runtimes.base import RawPrediction
from mlplatform.serving.schemas import (
    BatchRequest,
    PredictInput,
)
from mlplatform.serving.shadow import ShadowJob, ShadowQueue
from mlplatform.settings import PredictionsSettings
from mlplatform.stores.artifacts.base import ArtifactNotFoundError, StorageUnavailableError

log = structlog.get_logger(__name__)
Arm = tuple[str, str]  # (experiment id, variant name)
Header = Callable[[str], str | None]  # a request header by (lower-case) name
INLINE_ROWS = 64  # up to this many rows predict on the event loop: tens of microseconds, no thread hop


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _values(raw: RawPrediction) -> list[Any]:
    values: list[Any] = raw.values.tolist()
    if raw.values.dtype == object:  # labels may be numpy scalars inside an object array
        values = [_plain(v) for v in values]
    return values


def batch_answers(
    ids: list[str], raw: RawPrediction, classes: tuple[Any, ...] | None
) -> list[dict[str, Any]]:
    """A `BatchPrediction` per row as plain data, built in one pass (a thousand rows: well under 1 ms)."""
    values = _values(raw)
    if raw.probabilities is None or classes is None:
        return [
            {"prediction_id": id_, "prediction": value, "probabilities": None, "confidence": None}
            for id_, value in zip(ids, values, strict=True)
        ]
    labels = [str(c) for c in classes]
    rows = raw.probabilities.tolist()
    confidences = raw.probabilities.max(axis=1).tolist()
    if len(labels) == 2:  # most classifiers: a dict display costs half of dict(zip(...))
        first, second = labels
        return [
            {
                "prediction_id": id_,
                "prediction": value,
                "probabilities": {first: p, second: q},
                "confidence": c,
            }
            for id_, value, (p, q), c in zip(ids, values, rows, confidences, strict=True)
        ]
    return [
        {
            "prediction_id": id_,
            "prediction": value,
            "probabilities": dict(zip(labels, row, strict=True)),
            "confidence": c,
        }
        for id_, value, row, c in zip(ids, values, rows, confidences, strict=True)
    ]


def first_answer(raw: RawPrediction, classes: tuple[Any, ...] | None) -> dict[str, Any]:
    """The first row's answer as the prediction cache stores it."""
    prediction = _values(raw)[0]
    if raw.probabilities is None or classes is None:
        return {"prediction": prediction, "probabilities": None, "confidence": None}
    row = raw.probabilities[0].tolist()
    probabilities = dict(zip([str(c) for c in classes], row, strict=True))
    return {"prediction": prediction, "probabilities": probabilities, "confidence": max(row)}


def response(
    prediction_id: str,
    model: str,
    version: str,
    answer: dict[str, Any],
    latency_ms: float,
    *,
    cached: bool = False,
    fallback: bool = False,
    arm: Arm | None = None,
) -> dict[str, Any]:
    """A `PredictResponse` as plain data: the model object would cost more than the prediction."""
    return {
        "prediction_id": prediction_id,
        "model": model,
        "version": version,
        "experiment": arm[0] if arm else None,
        "variant": arm[1] if arm else None,
        "prediction": answer["prediction"],
        "probabilities": answer.get("probabilities"),
        "confidence": answer.get("confidence"),
        "cached": cached,
        "fallback": fallback,
        "latency_ms": latency_ms,
    }


class ServingService:
    def __init__(
        self,
        *,
        registry: RegistryService,
        models: ModelCache,
        predictions: PredictionCache,
        logs: PredictionLogWriter,
        settings: PredictionsSettings,
        metrics: ServingMetrics,
    ) -> None:
        self.registry = registry
        self.models = models
        self.predictions = predictions
        self.logs = logs
        self.settings = settings
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict")
        self.shadows = ShadowQueue(
            self.run_shadow, size=settings.shadow_queue_size, dropped=metrics.experiments.shadow_dropped
        )
        self.timeout = settings.timeout_ms / 1000

    async def close(self) -> None:
        await self.shadows.close()
        await self.predictions.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # --- resolution and loading ------------------------------------------------------------------------

    async def loaded(self, entry: VersionEntry) -> LoadedModel:
        found = self.models.peek(entry.id)
        if found is not None:
            return found
        try:
            return await self.models.get(entry)
        except (StorageUnavailableError, ArtifactNotFoundError) as exc:
            raise Unavailable(f"cannot load {entry.id}: artifact storage: {exc}") from None

    async def _run(self, model: LoadedModel, matrix: np.ndarray) -> RawPrediction:
        if model.inline and len(matrix) <= INLINE_ROWS:
            return model.runtime.predict(matrix)
        future = asyncio.get_running_loop().run_in_executor(self.executor, model.runtime.predict, matrix)
        return await asyncio.wait_for(future, self.timeout)

    # --- experiments ----------------------------------------------------------------------------------

    def _route(
        self, model: str, key: Callable[[Route], str | None]
    ) -> tuple[VersionEntry, Arm | None, Route | None]:
        """What `model` resolves to: the running experiment's variant for a bare name it covers (no I/O),
        else the version the reference names."""
        route = self.registry.route(model)
        if route is None:
            return self.registry.resolve(model), None, None
        variant = route.pick(key(route))
        return self.registry.variant_entry(model, variant), (route.experiment, variant.name), route

    def experiment_totals(self) -> dict[tuple[str, str], tuple[int, int, int, int, float, int]]:
        """This process's running totals per (experiment, variant) (`ExperimentMetrics.totals`)."""
        return self.metrics.experiments.totals()

    def _mirror(
        self,
        route: Route | None,
        key: str | None,
        entry: VersionEntry,
        matrix: np.ndarray,
        answered: tuple[tuple[str, int], ...],
        primary: np.ndarray,
    ) -> None:
        """Queue the request for the shadow after the answer: never waits, drops (and counts) when full.
        `primary` is what the answer said, to count how often the shadow agrees."""
        if route is None or route.shadow is None or not route.mirrored(key):
            return
        shadow = route.shadow
        try:
            target = self.registry.variant_entry(entry.name, shadow)
        except NotFound:
            return
        self.shadows.submit(ShadowJob(target, (route.experiment, shadow.name), matrix, answered, primary))

    async def run_shadow(self, job: ShadowJob) -> None:
        """One mirrored request on the shadow version: logged and counted under its variant, never raised."""
        started = time.perf_counter()
        try:
            model = await self.loaded(job.entry)
            raw = await self._run(model, job.matrix)
        except Exception as exc:
            self.metrics.experiments.failed(job.arm)
            log.warning(
                "shadow prediction failed", version=job.entry.id, error=f"{type(exc).__name__}: {exc}"
            )
            return
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.experiments.observe(job.arm, latency_ms, count=len(job.matrix))
        self.metrics.experiments.compare(job.arm, job.primary, raw.values)
        begin = 0
        for first_id, rows in job.answered:  # the answer's blocks, each paired by its first id
            end = begin + rows
            block = RawPrediction(
                raw.values[begin:end], None if raw.probabilities is None else raw.probabilities[begin:end]
            )
            self._log_block(
                job.entry, new_block(), job.matrix[begin:end], block, first_id, latency_ms, job.arm
            )
            begin = end

    # --- single predictions -----------------------------------------------------------------------------

    async def predict(self, request: PredictInput, header: Header | None = None) -> dict[str, Any]:
        """The `PredictResponse` as plain data (the router sends it as is)."""
        started = time.perf_counter()
        arm: Arm | None = None
        try:
            entry, arm, route = self._route(request.model, lambda r: sticky_key(r, request, header))
        except NotFound:
            return await self._fallback_or_raise(request, started, reason="not_found")
        try:
            model = await self.loaded(entry)
            row = model.signature.row(request.features, "features")
            key = self.predictions.key(entry.id, row) if self.predictions.enabled else None
            if key is not None and (hit := await self.predictions.get(key)) is not None:
                return self._respond(entry, row, hit, request, started, cached=True, arm=arm)
            try:
                matrix = model.signature.matrix([row])
                raw = await self._run(model, matrix)
            except TimeoutError:
                return await self._on_timeout(request, entry, row, key, started, arm)
            answer = first_answer(raw, entry.description.classes)
            if key is not None:
                await self.predictions.put(key, answer, answer["confidence"])
            answered = self._respond(entry, row, answer, request, started, arm=arm)
            if route is not None and route.shadow is not None:  # logged with the answer's id: its labels
                sticky = sticky_key(route, request, header)  # pair the shadow's prediction with them
                self._mirror(route, sticky, entry, matrix, ((answered["prediction_id"], 1),), raw.values)
            return answered
        except (
            InvalidInput,
            DeadlineExceeded,
        ):  # bad input is no error of the model's; a timeout was counted
            raise
        except Exception:
            self.metrics.errors.labels(entry.name).inc()
            if arm is not None:
                self.metrics.experiments.failed(arm)
            raise

    def _respond(
        self,
        entry: VersionEntry,
        row: list[Any],
        answer: dict[str, Any],
        request: PredictInput,
        started: float,
        *,
        cached: bool = False,
        fallback: bool = False,
        arm: Arm | None = None,
    ) -> dict[str, Any]:
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        prediction_id = new_id()
        prediction = answer["prediction"]
        probabilities, confidence = answer.get("probabilities"), answer.get("confidence")
        self.metrics.observe(entry.name, entry.id, latency_ms)
        if arm is not None:
            self.metrics.experiments.observe(arm, latency_ms)
        if self._sampled():
            self.logs.submit(
                PredictionRecord(
                    id=prediction_id,
                    model=entry.name,
                    version=entry.id,
                    variant=arm[1] if arm else None,
                    request_id=request.request_id,
                    inputs=row,
                    prediction=prediction,
                    probabilities=probabilities,
                    confidence=confidence,
                    latency_ms=latency_ms,
                    cached=cached,
                    created_at=utcnow(),
                    experiment=arm[0] if arm else None,
                )
            )
        return response(
            prediction_id, entry.name, entry.id, answer, latency_ms, cached=cached, fallback=fallback, arm=arm
        )

    def _sampled(self) -> bool:
        rate = self.settings.log_sample_rate
        return rate >= 1 or (rate > 0 and random.random() < rate)

    async def _on_timeout(
        self,
        request: PredictInput,
        entry: VersionEntry,
        row: list[Any],
        key: str | None,
        started: float,
        arm: Arm | None,
    ) -> dict[str, Any]:
        self.metrics.errors.labels(entry.name).inc()
        if arm is not None:
            self.metrics.experiments.failed(arm)
        if key is not None and (hit := await self.predictions.get(key)) is not None:
            self.metrics.fallbacks.labels(entry.name, "cached").inc()
            return self._respond(entry, row, hit, request, started, cached=True, arm=arm)
        return await self._fallback_or_raise(request, started, reason="timeout", entry=entry)

    async def _fallback_or_raise(
        self, request: PredictInput, started: float, *, reason: str, entry: VersionEntry | None = None
    ) -> dict[str, Any]:
        name = entry.name if entry else parse_ref(request.model).name
        fallback = self.settings.fallbacks.get(name)
        if fallback is None:
            if reason == "timeout":
                raise DeadlineExceeded(
                    f"{request.model}: no prediction within ml.predictions.timeout-ms "
                    f"({self.settings.timeout_ms} ms) and no cached answer or fallback",
                    details={"field": "model", "timeout_ms": self.settings.timeout_ms},
                )
            self.registry.resolve(request.model)  # raises the precise NotFound
        assert fallback is not None
        self.metrics.fallbacks.labels(name, reason).inc()
        if fallback.model is not None:
            target = self.registry.resolve(fallback.model, "ml.predictions.fallbacks")
            model = await self.loaded(target)
            row = model.signature.row(request.features, "features")
            raw = await self._run(model, model.signature.matrix([row]))
            answer = first_answer(raw, target.description.classes)
            return self._respond(target, row, answer, request, started, fallback=True)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return response(
            new_id(), name, "fallback", {"prediction": fallback.constant}, latency_ms, fallback=True
        )

    # --- batches ----------------------------------------------------------------------------------------

    async def predict_batch(
        self, request: BatchRequest, *, max_rows: int, header: Header | None = None
    ) -> dict[str, Any]:
        """The `BatchResponse` as plain data (the router sends it as is). An experiment routes the whole
        batch to one variant."""
        started = time.perf_counter()
        if len(request.instances) > max_rows:
            problem = f"at most {max_rows} instances per request (security.limits.max-batch-rows)"
            raise InvalidInput(f"instances: {problem}", details=[{"field": "instances", "problem": problem}])
        first = request.instances[0]
        single = PredictInput(
            request.model, first if isinstance(first, dict | list) else [], request.request_id
        )
        entry, arm, route = self._route(request.model, lambda r: sticky_key(r, single, header))
        model = await self.loaded(entry)
        matrix = model.signature.batch(request.instances, "instances")
        results: list[dict[str, Any]] = []  # plain dicts: a thousand model objects would cost milliseconds
        chunks: list[tuple[str, np.ndarray, RawPrediction]] = []
        size = min(self.settings.batch_size, BLOCK)  # a chunk's ids are one block: it is logged as one row
        try:
            for begin in range(0, len(matrix), size):
                chunk = matrix[begin : begin + size]
                raw = await self._run(model, chunk)
                ids = new_ids(len(chunk))
                chunks.append((ids[0], chunk, raw))
                results += batch_answers(ids, raw, entry.description.classes)
        except TimeoutError:
            self.metrics.errors.labels(entry.name).inc()
            if arm is not None:
                self.metrics.experiments.failed(arm)
            raise DeadlineExceeded(
                f"{request.model}: the batch did not finish within ml.predictions.timeout-ms "
                f"({self.settings.timeout_ms} ms); send smaller batches",
                details={"field": "instances", "timeout_ms": self.settings.timeout_ms},
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.observe(entry.name, entry.id, latency_ms, count=len(matrix))
        if arm is not None:
            self.metrics.experiments.observe(arm, latency_ms, count=len(matrix))
        for first_id, chunk, raw in chunks:
            self._log_block(entry, first_id, chunk, raw, request.request_id, latency_ms, arm)
        if route is not None and route.shadow is not None:
            answered = np.concatenate([raw.values for _, _, raw in chunks])
            blocks = tuple((first_id, len(chunk)) for first_id, chunk, _ in chunks)
            self._mirror(route, sticky_key(route, single, header), entry, matrix, blocks, answered)
        return {
            "model": entry.name,
            "version": entry.id,
            "experiment": arm[0] if arm else None,
            "variant": arm[1] if arm else None,
            "predictions": results,
            "latency_ms": round(latency_ms, 3),
        }

    def _log_block(
        self,
        entry: VersionEntry,
        first_id: str,
        inputs: np.ndarray,
        raw: RawPrediction,
        request_id: str | None,
        latency_ms: float,
        arm: Arm | None = None,
    ) -> None:
        """Log consecutive predictions as one record; sampling keeps or skips the block as a whole."""
        if not self._sampled() or not self.logs.accepting(len(inputs)):
            return
        classes = entry.description.classes
        self.logs.submit(
            BatchRecord(
                first_id=first_id,
                model=entry.name,
                version=entry.id,
                variant=arm[1] if arm else None,
                request_id=request_id,
                inputs=inputs,
                predictions=raw.values,
                classes=None if classes is None else [str(c) for c in classes],
                probabilities=raw.probabilities if classes is not None else None,
                latency_ms=latency_ms,
                created_at=utcnow(),
                experiment=arm[0] if arm else None,
            )
        )

    # --- raw matrices (Open Inference Protocol) ---------------------------------------------------------

    def route_infer(
        self, model: str, version: str | None, request_id: str | None, header: Header | None = None
    ) -> tuple[VersionEntry, Arm | None, Route | None]:
        """The version a V2 infer request runs on: an experiment's variant when the path names no version."""
        if version is not None:
            return self.registry.resolve(f"{model}/{version}" if version.isdigit() else version), None, None
        single = PredictInput(model, [], request_id)
        return self._route(model, lambda r: sticky_key(r, single, header))

    async def infer(
        self,
        entry: VersionEntry,
        model: LoadedModel,
        matrix: np.ndarray,
        request_id: str | None,
        arm: Arm | None = None,
        route: Route | None = None,
        header: Header | None = None,
    ) -> RawPrediction:
        """Predict a prepared matrix with the deadline, metrics and logs of every other path."""
        started = time.perf_counter()
        try:
            raw = await self._run(model, matrix)
        except TimeoutError:
            self.metrics.errors.labels(entry.name).inc()
            if arm is not None:
                self.metrics.experiments.failed(arm)
            raise DeadlineExceeded(
                f"{entry.id}: no prediction within ml.predictions.timeout-ms ({self.settings.timeout_ms} ms)",
                details={"timeout_ms": self.settings.timeout_ms},
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.observe(entry.name, entry.id, latency_ms, count=len(matrix))
        if arm is not None:
            self.metrics.experiments.observe(arm, latency_ms, count=len(matrix))
        blocks = []
        for begin in range(0, len(matrix), BLOCK):
            end = begin + BLOCK
            block = RawPrediction(
                raw.values[begin:end], None if raw.probabilities is None else raw.probabilities[begin:end]
            )
            first_id = new_block()
            blocks.append((first_id, len(block.values)))
            self._log_block(entry, first_id, matrix[begin:end], block, request_id, latency_ms, arm)
        if route is not None and route.shadow is not None:
            key = sticky_key(route, PredictInput(entry.name, [], request_id), header)
            self._mirror(route, key, entry, matrix, tuple(blocks), raw.values)
        return raw


def sticky_key(route: Route, request: PredictInput, header: Header | None) -> str | None:
    """What keeps a caller on one variant: the request id (body, else X-Request-ID), a header, a feature;
    None (a random variant) when it is missing or the experiment routes at random."""
    how = route.sticky
    if how == "request_id":
        return request.request_id or (header("x-request-id") if header else None)
    if how == "random":
        return None
    kind, _, name = how.partition(":")
    if kind == "header":
        return header(name.lower()) if header else None
    value = request.features.get(name) if isinstance(request.features, dict) else None
    return None if value is None else str(value)
