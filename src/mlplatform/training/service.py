"""Training use cases: check and queue a job, run it on Dask, follow its progress, cancel, register."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
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
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.stores.jobs import DaskEngine
from mlplatform.training.algorithms import ALGORITHMS, parameter_problems, value_problems
from mlplatform.training.checkpoints import delete_checkpoints
from mlplatform.training.distributed import wants_distributed
from mlplatform.training.following import GaveUp, RunFollower
from mlplatform.training.metrics import TrainingMetrics
from mlplatform.training.recovery import LeaseLost, Reconciler, instance_id
from mlplatform.training.schemas import (
    JobState,
    Page,
    TrainingJobCreate,
    TrainingJobRead,
    TrainingTrialRead,
)
from mlplatform.training.search import DEFAULT_METRIC, best_trial, checked_search
from mlplatform.training.store import TrainingJobStore

log = structlog.get_logger(__name__)
SWEEP_AFTER_SECONDS = (3.0, 13.0)  # an ended job's checkpoints are deleted again this long after it ended
CANCEL_VISIBLE_SECONDS = 10.0  # a run's cancel Event stays set this long after its task ended
_NUMERIC = re.compile(r"^(u?int\d+|float\d*|double|halffloat|bool)$")
_CLASS_TYPES = re.compile(r"^(u?int\d+|bool|string|large_string)$")
_STRING = re.compile(r"^(string|large_string|string_view)$")  # categorical features, encoded by the job
MAX_INT_CLASSES = 20  # an integer target with at most this many distinct possible values is a class label


def _invalid(field: str, problem: str, **extra: Any) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", details=[{"field": field, "problem": problem, **extra}])


def _feature_type(column: ColumnRead) -> FeatureType:
    if column.type == "bool":
        return FeatureType.BOOL
    if _STRING.match(column.type):
        return FeatureType.STRING
    return FeatureType.INT if "int" in column.type else FeatureType.FLOAT


def _kind(column: ColumnRead, *, exact: bool) -> str:
    """What a column holds as a job sees it: numbers (any width; `exact` tells integers from floats, which
    matters for class labels), booleans or strings."""
    if _STRING.match(column.type):
        return "string"
    if column.type == "bool":
        return "bool" if exact else "number"
    if _NUMERIC.match(column.type):
        return ("integer" if "int" in column.type else "float") if exact else "number"
    return column.type


def infer_task(column: ColumnRead) -> Task:
    """Strings and booleans are labels; integers too when they span at most MAX_INT_CLASSES values."""
    if column.type in ("string", "large_string", "bool"):
        return Task.CLASSIFICATION
    integer = "int" in column.type and column.min is not None and column.max is not None
    if integer and column.max - column.min < MAX_INT_CLASSES:  # type: ignore[operator]
        return Task.CLASSIFICATION
    return Task.REGRESSION


def _column_types(dataset: DatasetRead, names: set[str]) -> dict[str, str]:
    return {c.name: c.type for c in dataset.columns if c.name in names}


def _searched(result: dict[str, Any]) -> str:
    """For a search's best model: which trial it is and its hyperparameters (the version has no field)."""
    if result.get("best_trial") is None:
        return ""
    params = ", ".join(f"{k}={v!r}" for k, v in result["hyperparameters"].items())
    return f"; best of {len(result['trials'])} trials (trial {result['best_trial']}): {params}"[:5000]


class TrainingService:
    def __init__(
        self,
        *,
        store: TrainingJobStore,
        datasets: DatasetService,
        registry: RegistryService,
        engine: DaskEngine,
        storage: StorageSettings,
        metrics: TrainingMetrics,
    ) -> None:
        self.store = store
        self.datasets = datasets
        self.registry = registry
        self.engine = engine
        self.storage = storage
        self.metrics = metrics
        self.runs: dict[str, asyncio.Task[None]] = {}
        self.sweeps: set[asyncio.Task[None]] = set()
        self.instance = instance_id()  # the owner of the leases this instance takes
        self.artifacts = create_artifact_store(storage)  # for the checkpoints (no I/O until used)
        self.reconciler = Reconciler(store=store, settings=engine.settings, follow=self._follow)

    # --- submit -------------------------------------------------------------------------------------------

    async def submit(self, request: TrainingJobCreate, *, actor: str) -> TrainingJobRead:
        """Check everything a job needs before anything is queued, store it queued, and start running it."""
        job = await self._checked(request, actor=actor)
        await self.store.create(job)
        with contextlib.suppress(Exception):
            await self.metrics.refresh(self.store)
        log.info("training job queued", job=job.id, model=job.model, algorithm=job.algorithm)
        self._follow(job.id)
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
        if request.validation.dataset is not None:
            await self._validation_dataset(request, dataset, features, task)
        if task not in ALGORITHMS[request.algorithm].tasks():
            raise _invalid("algorithm", f"{request.algorithm} does not do {task.value}")
        problems = await asyncio.to_thread(
            parameter_problems, request.algorithm, task, request.hyperparameters
        ) or await asyncio.to_thread(value_problems, request.algorithm, task, request.hyperparameters)
        if problems:
            raise InvalidInput(
                "hyperparameters: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                details=[{"field": f"hyperparameters.{k}", "problem": v} for k, v in problems.items()],
            )
        search = None
        if request.search is not None:
            search = await asyncio.to_thread(
                checked_search,
                request.search,
                algorithm=request.algorithm,
                task=task,
                hyperparameters=request.hyperparameters,
            )
        if search is not None and request.distributed:
            problem = "a search's trials each train on one worker; leave distributed out"
            raise _invalid("distributed", problem)
        distributed = search is None and wants_distributed(
            request.distributed,
            algorithm=request.algorithm,
            dataset_format=dataset.format,
            rows=dataset.rows,
            threshold=self.engine.settings.distributed_threshold_rows,
            string_features=any(not _NUMERIC.match(columns[name].type) for name in features),
            validation_dataset=request.validation.dataset is not None,
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
            search=search,
            distributed=distributed,
            seed=request.seed,
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
        other = [
            n for n in features if not _NUMERIC.match(columns[n].type) and not _STRING.match(columns[n].type)
        ]
        if other:
            kinds = ", ".join(f"{name} ({columns[name].type})" for name in other[:20])
            problem = (
                f"columns {kinds} are neither numbers, booleans nor strings; leave them out with "
                "`features` (or derive a numeric column from them)"
            )
            raise _invalid("features", problem, columns=other)
        return features

    async def _validation_dataset(
        self, request: TrainingJobCreate, dataset: DatasetRead, features: list[str], task: Task
    ) -> None:
        """The dataset `validation.dataset` names must hold the target and every feature, with the kinds of
        values the training dataset holds (and the same kind of class label)."""
        field = "validation.dataset"
        wanted = request.validation.dataset or ""
        if wanted == dataset.id:
            raise _invalid(
                field, "this is the training dataset: validation needs rows the model does not train on"
            )
        try:
            other = await self.datasets.get(wanted)
        except NotFound:
            raise _invalid(field, f"no dataset with id {wanted[:80]!r}") from None
        training = {c.name: c for c in dataset.columns}
        columns = {c.name: c for c in other.columns}
        missing = [name for name in [request.target, *features] if name not in columns]
        if missing:
            problem = f"the validation dataset has no columns {missing[:20]} (the job's target and features)"
            raise _invalid(field, problem, missing=missing)
        if columns[request.target].nulls >= other.rows:
            raise _invalid(field, f"column {request.target!r} of the validation dataset holds no values")
        exact = {request.target: task is Task.CLASSIFICATION}
        differing = [
            f"{name}: {columns[name].type} where the training dataset has {training[name].type}"
            for name in [request.target, *features]
            if _kind(columns[name], exact=exact.get(name, False))
            != _kind(training[name], exact=exact.get(name, False))
        ]
        if differing:
            listed = "; ".join(differing[:20])
            problem = f"columns hold other kinds of values than in the training dataset ({listed})"
            raise _invalid(field, problem, columns=differing)

    # --- running ------------------------------------------------------------------------------------------

    async def _validation_source(self, job: TrainingJobRead) -> DatasetRead | None:
        return await self.datasets.get(job.validation.dataset) if job.validation.dataset else None

    def _spec(
        self, job: TrainingJobRead, dataset: DatasetRead, validation: DatasetRead | None = None
    ) -> dict[str, Any]:
        """What the worker needs: where to read (storage settings, keys, the columns' profiled types) and
        what to train; never the data."""
        storage = {
            "url": self.storage.url,
            "access_key_id": self.storage.access_key_id.get_secret_value()
            if self.storage.access_key_id
            else None,
            "secret_access_key": self.storage.secret_access_key.get_secret_value()
            if self.storage.secret_access_key
            else None,
        }
        wanted = {job.target, *job.features}
        types = {c.name: c for c in dataset.columns}
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
            "column_types": _column_types(dataset, wanted),
            "string_features": [n for n in job.features if _STRING.match(types[n].type)],
            "validation_fraction": job.validation.fraction,
            "validation_dataset": {
                "key": validation.storage_key,
                "format": validation.format,
                "column_types": _column_types(validation, wanted),
            }
            if validation is not None
            else None,
            "distributed": bool(job.distributed),
            "seed": job.seed,
            "progress_name": f"mlplatform-progress-{job.id}",
            "cancel_name": f"mlplatform-cancel-{job.id}",
            "search": job.search.model_dump(by_alias=True) if job.search else None,
        }

    def _follow(self, job_id: str) -> None:
        """Claim and run the job in the background (nothing when this instance already follows it)."""
        if job_id in self.runs:
            return
        run = asyncio.create_task(self._run(job_id), name=f"training-{job_id}")
        self.runs[job_id] = run
        run.add_done_callback(lambda _: self.runs.pop(job_id, None))

    def _lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.engine.settings.lease_seconds)

    async def _run(self, job_id: str) -> None:
        """Claim the job's lease, then run it on Dask, once more for each run lost with its worker, up to
        `jobs.max-attempts`. A graceful stop hands the job back to be resumed; a training error fails it."""
        lease = self._lease_until()
        job = await self.store.claim(job_id, owner=self.instance, at=utcnow(), lease_until=lease)
        if job is None:
            return  # another instance follows it, or it has ended
        limit = self.engine.settings.max_attempts
        try:
            if job.cancel_requested:
                await self._end(job.id, "cancelled")
                return
            if job.attempt > limit:  # its previous instances stopped answering while they followed it
                reason = job.error or "the server instance following it stopped answering"
                await self._end(job.id, "failed", error=f"gave up after {limit} attempts; last: {reason}")
                return
            while (lost := await self._run_on_dask(job)) is not None:
                log.warning("training run lost", job=job.id, attempt=job.attempt, reason=lost)
                if job.attempt >= limit:
                    await self._end(job.id, "failed", error=f"gave up after {limit} attempts; last: {lost}")
                    return
                if await self.store.retry(job.id, owner=self.instance, at=utcnow(), error=lost) is None:
                    raise LeaseLost
                job = await self.store.get(job.id)
        except asyncio.CancelledError:  # the app is stopping: hand the job over (its checkpoints stay)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release(job_id, owner=self.instance))
            log.info("training job handed back", job=job_id)
            raise
        except LeaseLost:
            log.warning("training job taken over by another instance", job=job_id)
        except Exception as exc:
            log.exception("training job failed", job=job_id, model=job.model)
            await self._end(job_id, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])

    async def _run_on_dask(self, job: TrainingJobRead) -> str | None:
        """One run of the job as one Dask task, followed to its end; the reason when the run was lost."""
        import distributed

        from mlplatform.training.worker import run_job

        dd: Any = distributed  # untyped library
        dataset = await self.datasets.get(job.dataset)
        client = await self.engine.client()
        spec = self._spec(job, dataset, await self._validation_source(job))
        spec.update(
            progress_name=f"mlplatform-progress-{job.id}-{job.attempt}",
            cancel_name=f"mlplatform-cancel-{job.id}-{job.attempt}",
            checkpoint_every=self.engine.settings.checkpoint_every,
            owner_name=f"mlplatform-owner-{job.id}",
            owner_token=new_id(),
        )
        # this run owns the job now: an earlier run of it still training on Dask stops at its next check
        await dd.Variable(spec["owner_name"], client=client).set(spec["owner_token"])
        progress = dd.Variable(spec["progress_name"], client=client)
        cancel = dd.Event(spec["cancel_name"], client=client)
        # a run followed by an instance that died may still train (Dask cannot stop a running task): stop it
        for earlier in range(1, job.attempt):
            await dd.Event(f"mlplatform-cancel-{job.id}-{earlier}", client=client).set()
        await cancel.clear()
        await progress.set({})  # set before the worker reports, so reading it never waits
        future = client.submit(run_job, spec, key=f"training-{job.id}-{new_id()}", pure=False)
        follower = RunFollower(
            store=self.store,
            settings=self.engine.settings,
            owner=self.instance,
            job=job,
            future=future,
            progress=progress,
            cancel=cancel,
            on_report=lambda latest, previous: self._record_trials(job.id, latest, previous),
        )
        try:
            result = await follower.until_done()
        except BaseException:
            await follower.stop()  # the next run resumes from its checkpoint
            raise
        finally:
            with contextlib.suppress(Exception):  # best effort: the run is over
                await future.cancel()
                await progress.delete()
        if isinstance(result, GaveUp):
            await self._end(job.id, "failed", error=result.reason)
            return None
        if isinstance(result, str):
            return result
        # A run's cancel Event stays set for a while after its task ends: the peers of a distributed fit look
        # at it at their own next round, and one that never saw it would wait on the collective (and hold its
        # worker from the next job). Cleared then, which also frees it on the scheduler.
        self._later(cancel.clear, CANCEL_VISIBLE_SECONDS, f"cancel-clear-{job.id}")
        if result["status"] == "cancelled" or (await self.store.get(job.id)).cancel_requested:
            await self._end(job.id, "cancelled")
            log.info("training job cancelled", job=job.id)
            return None
        await follower.report(beat=True, read=False)  # still ours? then register
        started = time.perf_counter()
        version = await self._register(job, dataset, result)
        timings = {**result.get("timings", {}), "register": time.perf_counter() - started}
        timings = {phase: round(seconds, 3) for phase, seconds in timings.items()}
        await self._end(job.id, "succeeded", metrics=result["metrics"], version_id=version, timings=timings)
        log.info("training job succeeded", job=job.id, model=job.model, version=version)
        return None

    async def _record_trials(self, job_id: str, latest: Any, seen: Any) -> None:
        """A search's worker reports every finished trial with its progress: store the ones not seen yet."""
        reported = latest.get("trials") if isinstance(latest, dict) else None
        if not reported:
            return
        known = {t["number"] for t in (seen.get("trials") or [])} if isinstance(seen, dict) else set()
        new = [TrainingTrialRead.model_validate(t) for t in reported if t["number"] not in known]
        if new:
            await self.store.record_trials(job_id, new)

    async def _register(self, job: TrainingJobRead, dataset: DatasetRead, result: dict[str, Any]) -> str:
        columns = {c.name: c for c in dataset.columns}
        classes = result["classes"]
        metadata = VersionMetadata(
            description=f"trained by job {job.id} ({job.algorithm}) on dataset {dataset.id}"
            + _searched(result),
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
        # The training rows the worker sampled become the version's drift reference.
        reference = io.BytesIO(result["reference"]) if result.get("reference") else None
        upload = Upload(
            source=io.BytesIO(result["artifact"]),
            filename=result["filename"],
            metadata=metadata,
            reference=reference,
        )
        created = await self.registry.register(job.model, upload, actor=job.created_by)
        return created.id

    async def _end(self, job_id: str, state: JobState, **values: Any) -> None:
        """The job's checkpoints deleted, then its final state (while this instance holds its lease): a job
        that reads as ended has none left. Its run has returned; a stray one is swept below."""
        current = await self.store.get(job_id)
        progress = None
        if state == "succeeded":
            progress = current.progress.model_copy(update={"fraction": 1.0, "eta_seconds": 0.0})
        if current.lease_owner == self.instance:  # else the instance that took it over resumes from them
            await self._delete_checkpoints(job_id)
        if await self.store.finish(
            job_id, state, at=utcnow(), progress=progress, owner=self.instance, **values
        ):
            await self._count(job_id)
        await self._disown(job_id)
        # Deleted again once any run of it still on Dask (one that cannot be interrupted mid-round, or a stray
        # an earlier instance left) has had time to notice it lost the job.
        for delay in SWEEP_AFTER_SECONDS:
            self._later(lambda: self._delete_checkpoints(job_id), delay, f"checkpoint-sweep-{job_id}")

    def _later(self, step: Callable[[], Awaitable[Any]], delay: float, name: str) -> None:
        """Run `step` after `delay` seconds, best effort (stopped with the service)."""

        async def run() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await step()

        task = asyncio.create_task(run(), name=name)
        self.sweeps.add(task)
        task.add_done_callback(self.sweeps.discard)

    async def _disown(self, job_id: str) -> None:
        """No run owns the ended job: a run of it still on Dask stops before writing another checkpoint."""
        if not self.engine.connected:
            return
        import distributed

        dd: Any = distributed  # untyped library
        with contextlib.suppress(Exception):
            client = await self.engine.client()
            await dd.Variable(f"mlplatform-owner-{job_id}", client=client).set("ended")

    async def _count(self, job_id: str) -> None:
        """A job this instance ended: its duration, and the counts by state now (not at the next refresh)."""
        with contextlib.suppress(Exception):  # metrics never fail a job
            self.metrics.finished(await self.store.get(job_id))
            await self.metrics.refresh(self.store)

    async def _delete_checkpoints(self, job_id: str) -> None:
        try:
            await delete_checkpoints(self.artifacts, job_id)
        except Exception as exc:  # storage away: the job's state is what matters; say what is left behind
            log.warning("training checkpoints not deleted", job=job_id, error=f"{type(exc).__name__}: {exc}")

    def start(self) -> None:
        """Start-up: the job counts by state; looking for jobs no instance follows (to resume them)."""
        self.metrics.start(self.store)
        self.reconciler.start()

    async def stop(self) -> None:
        """Shutdown: stop the reconciler, hand every job this instance follows back (each stays running and
        is resumed from its last checkpoint by the next instance), then close the Dask client."""
        await self.metrics.stop()
        await self.reconciler.stop()
        for sweep in list(self.sweeps):
            sweep.cancel()
        runs = list(self.runs.values())
        for run in runs:
            run.cancel()
        for run in runs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        await self.engine.close()
        await self.artifacts.close()

    # --- reading and cancelling ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> TrainingJobRead:
        return await self.store.get(job_id)

    async def list_jobs(
        self, *, model: str | None, state: JobState | None, limit: int, offset: int
    ) -> Page[TrainingJobRead]:
        return await self.store.list_jobs(model=model, state=state, limit=limit, offset=offset)

    async def trials(self, job_id: str) -> list[TrainingTrialRead]:
        """The job's search trials by number, the best (by the search's metric) marked."""
        job = await self.store.get(job_id)
        trials = await self.store.list_trials(job_id)
        if job.search is None or not trials:
            return trials
        best = best_trial(trials, job.search.metric or DEFAULT_METRIC[job.task])
        return [t.model_copy(update={"best": True}) if t is best else t for t in trials]

    async def cancel(self, job_id: str, *, actor: str) -> TrainingJobRead:
        """A queued job ends cancelled now; a running one when its worker next checks (within a second or
        two for boosting, at the next chunk for forests). A finished job is returned unchanged."""
        job = await self.store.request_cancel(job_id)
        if job.state == "queued" and await self.store.finish(job_id, "cancelled", at=utcnow()):
            await self._count(job_id)
            await self._delete_checkpoints(job_id)
            job = await self.store.get(job_id)
        log.info("training job cancel requested", job=job_id, actor=actor, state=job.state)
        return job
