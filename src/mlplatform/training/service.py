"""Training use cases: check and queue a job, run it on Dask, follow its progress, cancel, register."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from typing import Any

import structlog

from mlplatform.clock import utcnow
from mlplatform.datasets.schemas import ColumnRead, DatasetRead
from mlplatform.datasets.service import DatasetService
from mlplatform.errors import InvalidInput, NotFound
from mlplatform.formats.base import FeatureType, Task
from mlplatform.ids import new_id
from mlplatform.registry.refs import check_name
from mlplatform.registry.schemas import VersionMetadata
from mlplatform.registry.service import RegistryService, Upload
from mlplatform.settings import StorageSettings
from mlplatform.stores.jobs import DaskEngine
from mlplatform.training.algorithms import ALGORITHMS, parameter_problems
from mlplatform.training.distributed import wants_distributed
from mlplatform.training.schemas import (
    JobProgress,
    JobState,
    Page,
    TrainingJobCreate,
    TrainingJobRead,
)
from mlplatform.training.store import TrainingJobStore

log = structlog.get_logger(__name__)
POLL_SECONDS = 0.25  # progress is read from Dask this often; the cancel flag from the database every 4th time
_NUMERIC = re.compile(r"^(u?int\d+|float\d*|double|halffloat|bool)$")
_CLASS_TYPES = re.compile(r"^(u?int\d+|bool|string|large_string)$")
MAX_INT_CLASSES = 20  # an integer target with at most this many distinct possible values is a class label


def _invalid(field: str, problem: str, **extra: Any) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", details=[{"field": field, "problem": problem, **extra}])


def _feature_type(column: ColumnRead) -> FeatureType:
    if column.type == "bool":
        return FeatureType.BOOL
    return FeatureType.INT if "int" in column.type else FeatureType.FLOAT


def infer_task(column: ColumnRead) -> Task:
    """Strings and booleans are labels; integers too when they span at most MAX_INT_CLASSES values."""
    if column.type in ("string", "large_string", "bool"):
        return Task.CLASSIFICATION
    integer = "int" in column.type and column.min is not None and column.max is not None
    if integer and column.max - column.min < MAX_INT_CLASSES:  # type: ignore[operator]
        return Task.CLASSIFICATION
    return Task.REGRESSION


class TrainingService:
    def __init__(
        self,
        *,
        store: TrainingJobStore,
        datasets: DatasetService,
        registry: RegistryService,
        engine: DaskEngine,
        storage: StorageSettings,
    ) -> None:
        self.store = store
        self.datasets = datasets
        self.registry = registry
        self.engine = engine
        self.storage = storage
        self.runs: dict[str, asyncio.Task[None]] = {}

    # --- submit -------------------------------------------------------------------------------------------

    async def submit(self, request: TrainingJobCreate, *, actor: str) -> TrainingJobRead:
        """Check everything a job needs before anything is queued, store it queued, and start running it."""
        job = await self._checked(request, actor=actor)
        await self.store.create(job)
        log.info("training job queued", job=job.id, model=job.model, algorithm=job.algorithm)
        self.runs[job.id] = asyncio.create_task(self._run(job), name=f"training-{job.id}")
        self.runs[job.id].add_done_callback(lambda _: self.runs.pop(job.id, None))
        return job

    async def _checked(self, request: TrainingJobCreate, *, actor: str) -> TrainingJobRead:
        check_name(request.model, "model")
        try:
            dataset = await self.datasets.get(request.dataset)
        except NotFound:
            raise _invalid("dataset", f"no dataset with id {request.dataset[:80]!r}") from None
        columns = {c.name: c for c in dataset.columns}
        target = columns.get(request.target)
        if target is None:
            raise _invalid("target", f"the dataset has no column {request.target!r}")
        if target.nulls >= dataset.rows:
            raise _invalid("target", f"column {request.target!r} holds no values")
        if target.min is not None and target.min == target.max:
            raise _invalid("target", f"column {request.target!r} is constant: nothing to learn")
        features = self._features(request, dataset, columns)
        task = request.task or infer_task(target)
        if task is Task.CLASSIFICATION and not _CLASS_TYPES.match(target.type):
            raise _invalid("task", f"a {target.type} column cannot be a class label; use regression")
        if task is Task.REGRESSION and not _NUMERIC.match(target.type):
            raise _invalid("task", f"a {target.type} column cannot be a regression target")
        if task not in ALGORITHMS[request.algorithm].tasks():
            raise _invalid("algorithm", f"{request.algorithm} does not do {task.value}")
        problems = await asyncio.to_thread(
            parameter_problems, request.algorithm, task, request.hyperparameters
        )
        if problems:
            raise InvalidInput(
                "hyperparameters: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                details=[{"field": f"hyperparameters.{k}", "problem": v} for k, v in problems.items()],
            )
        parent = None
        if request.parent:
            try:
                parent = (await self.registry.resolve_fresh(request.parent, "parent")).id
            except NotFound as exc:
                raise _invalid("parent", exc.message) from None
        return TrainingJobRead(
            id=new_id(),
            model=request.model,
            dataset=dataset.id,
            target=request.target,
            features=features,
            task=task,
            algorithm=request.algorithm,
            hyperparameters=request.hyperparameters,
            validation=request.validation,
            parent=parent,
            tags=request.tags,
            distributed=wants_distributed(
                request.distributed,
                algorithm=request.algorithm,
                dataset_format=dataset.format,
                rows=dataset.rows,
                threshold=self.engine.settings.distributed_threshold_rows,
            ),
            state="queued",
            created_at=utcnow(),
            created_by=actor,
        )

    @staticmethod
    def _features(
        request: TrainingJobCreate, dataset: DatasetRead, columns: dict[str, ColumnRead]
    ) -> list[str]:
        if request.features is None:
            features = [c.name for c in dataset.columns if c.name != request.target]
        else:
            features = list(dict.fromkeys(request.features))
            missing = [name for name in features if name not in columns]
            if missing:
                raise _invalid("features", f"the dataset has no columns {missing[:20]}", missing=missing)
            if request.target in features:
                raise _invalid("features", "the target cannot also be a feature")
        if not features:
            raise _invalid("features", "no feature columns")
        strings = [name for name in features if not _NUMERIC.match(columns[name].type)]
        if strings:
            problem = (
                f"columns {strings[:20]} are not numeric; this version trains on numeric and boolean "
                "columns only: leave them out with `features`"
            )
            raise _invalid("features", problem, columns=strings)
        return features

    # --- running ------------------------------------------------------------------------------------------

    def _spec(self, job: TrainingJobRead, dataset: DatasetRead) -> dict[str, Any]:
        storage = {
            "url": self.storage.url,
            "access_key_id": self.storage.access_key_id.get_secret_value()
            if self.storage.access_key_id
            else None,
            "secret_access_key": self.storage.secret_access_key.get_secret_value()
            if self.storage.secret_access_key
            else None,
        }
        return {
            "job_id": job.id,
            "storage": storage,
            "dataset_key": dataset.storage_key,
            "dataset_format": dataset.format,
            "target": job.target,
            "features": job.features,
            "task": job.task.value,
            "algorithm": job.algorithm,
            "hyperparameters": job.hyperparameters,
            "validation_fraction": job.validation.fraction,
            "distributed": bool(job.distributed),
            "progress_name": f"mlplatform-progress-{job.id}",
            "cancel_name": f"mlplatform-cancel-{job.id}",
        }

    async def _run(self, job: TrainingJobRead) -> None:
        try:
            await self._run_on_dask(job)
        except asyncio.CancelledError:  # the app is shutting down (resuming such jobs is not built yet)
            await self._finish(job.id, "failed", error="the server stopped while the job ran")
            raise
        except Exception as exc:
            log.exception("training job failed", job=job.id, model=job.model)
            await self._finish(job.id, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])

    async def _run_on_dask(self, job: TrainingJobRead) -> None:
        import distributed

        from mlplatform.training.worker import run_job

        dd: Any = distributed  # untyped library
        dataset = await self.datasets.get(job.dataset)
        client = await self.engine.client()
        if not await self.store.start(job.id, worker=None, at=utcnow()):
            return  # cancelled while queued
        spec = self._spec(job, dataset)
        progress = dd.Variable(spec["progress_name"], client=client)
        cancel = dd.Event(spec["cancel_name"], client=client)
        await progress.set({})  # set before the worker reports, so reading it never waits
        future = client.submit(run_job, spec, key=f"training-{job.id}", pure=False)
        try:
            polls = 0
            seen: Any = {}
            while not future.done():
                await asyncio.sleep(POLL_SECONDS)
                polls += 1
                seen = await self._report(job.id, progress, seen, beat=polls % 4 == 0)
                if polls % 4 == 0 and (await self.store.get(job.id)).cancel_requested:
                    await cancel.set()
            await self._report(job.id, progress, seen, beat=False)
            result: dict[str, Any] = await future
        finally:
            for cleanup in (future.cancel, progress.delete, cancel.clear):  # best effort: the job is over
                with contextlib.suppress(Exception):
                    await cleanup()
        if result["status"] == "cancelled" or (await self.store.get(job.id)).cancel_requested:
            await self._finish(job.id, "cancelled")
            log.info("training job cancelled", job=job.id)
            return
        version = await self._register(job, dataset, result)
        await self._finish(job.id, "succeeded", metrics=result["metrics"], version_id=version)
        log.info("training job succeeded", job=job.id, model=job.model, version=version)

    async def _report(self, job_id: str, progress: Any, seen: Any, *, beat: bool) -> Any:
        """Record what the worker last reported when it changed; the heartbeat at least every second."""
        latest = await progress.get()
        if latest and (latest != seen or beat):
            await self.store.report(
                job_id, JobProgress.model_validate(latest["progress"]), worker=latest["worker"], at=utcnow()
            )
        elif beat:
            current = await self.store.get(job_id)
            await self.store.report(job_id, current.progress, worker=None, at=utcnow())
        return latest

    async def _register(self, job: TrainingJobRead, dataset: DatasetRead, result: dict[str, Any]) -> str:
        columns = {c.name: c for c in dataset.columns}
        classes = result["classes"]
        metadata = VersionMetadata(
            description=f"trained by job {job.id} ({job.algorithm}) on dataset {dataset.id}",
            tags=job.tags,
            metrics=result["metrics"],
            parent=job.parent,
            training_dataset_id=dataset.id,
            training_job_id=job.id,
            feature_names=job.features,
            feature_types={name: _feature_type(columns[name]) for name in job.features},
            task=job.task,
            classes=[c if isinstance(c, int | str) and not isinstance(c, bool) else str(c) for c in classes]
            if classes is not None
            else None,
        )
        upload = Upload(source=io.BytesIO(result["artifact"]), filename=result["filename"], metadata=metadata)
        created = await self.registry.register(job.model, upload, actor=job.created_by)
        return created.id

    async def _finish(self, job_id: str, state: JobState, **values: Any) -> None:
        progress = None
        if state == "succeeded":
            current = (await self.store.get(job_id)).progress
            progress = current.model_copy(update={"fraction": 1.0, "eta_seconds": 0.0})
        await self.store.finish(job_id, state, at=utcnow(), progress=progress, **values)

    async def stop(self) -> None:
        """Shutdown: stop following running jobs (each is marked failed), then close the Dask client."""
        runs = list(self.runs.values())
        for run in runs:
            run.cancel()
        for run in runs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        await self.engine.close()

    # --- reading and cancelling ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> TrainingJobRead:
        return await self.store.get(job_id)

    async def list_jobs(
        self, *, model: str | None, state: JobState | None, limit: int, offset: int
    ) -> Page[TrainingJobRead]:
        return await self.store.list_jobs(model=model, state=state, limit=limit, offset=offset)

    async def cancel(self, job_id: str, *, actor: str) -> TrainingJobRead:
        """A queued job ends cancelled now; a running one when its worker next checks (within a second or
        two for boosting, at the next chunk for forests). A finished job is returned unchanged."""
        job = await self.store.request_cancel(job_id)
        if job.state == "queued" and await self.store.finish(job_id, "cancelled", at=utcnow()):
            job = await self.store.get(job_id)
        log.info("training job cancel requested", job=job_id, actor=actor, state=job.state)
        return job
