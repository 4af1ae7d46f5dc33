"""The training job store on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, func, or_, select, update

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import NotFound
from mlplatform.formats.base import Task
from mlplatform.training.schemas import (
    TERMINAL,
    JobProgress,
    JobState,
    Page,
    SearchSpec,
    TrainingJobRead,
    TrainingTrialRead,
    TrialState,
    ValidationSpec,
)
from mlplatform.training.store import TrainingJobStore
from mlplatform.training.tables import TrainingJobRow, TrainingTrialRow


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _read(row: TrainingJobRow) -> TrainingJobRead:
    spec = row.spec
    return TrainingJobRead(
        id=row.id,
        model=row.model,
        dataset=row.dataset_id,
        target=spec["target"],
        features=spec["features"],
        task=Task(row.task),
        algorithm=row.algorithm,
        hyperparameters=spec.get("hyperparameters", {}),
        validation=ValidationSpec.model_validate(spec.get("validation", {})),
        parent=spec.get("parent"),
        tags=spec.get("tags", {}),
        distributed=spec.get("distributed"),
        seed=spec.get("seed", 0),
        state=cast(JobState, row.state),
        cancel_requested=row.cancel_requested,
        progress=JobProgress.model_validate(row.progress or {}),
        metrics=row.metrics or {},
        timings=row.timings or {},
        error=row.error,
        attempt=row.attempt,
        worker=row.worker,
        version_id=row.version_id,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        heartbeat_at=_utc(row.heartbeat_at),
        search=SearchSpec.model_validate(spec["search"]) if spec.get("search") else None,
        lease_owner=row.lease_owner,
        lease_expires_at=_utc(row.lease_expires_at),
        resumed_from=row.resumed_from,
    )


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"no training job with id {job_id[:80]!r}", details={"field": "id"})


class SqlTrainingJobStore(TrainingJobStore):
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, job: TrainingJobRead) -> None:
        row = TrainingJobRow(
            id=job.id,
            model=job.model,
            dataset_id=job.dataset,
            algorithm=job.algorithm,
            task=job.task.value,
            spec={
                "target": job.target,
                "features": job.features,
                "hyperparameters": job.hyperparameters,
                "validation": job.validation.model_dump(),
                "parent": job.parent,
                "tags": job.tags,
                "search": job.search.model_dump(by_alias=True) if job.search else None,
                "distributed": job.distributed,
                "seed": job.seed,
            },
            state=job.state,
            cancel_requested=job.cancel_requested,
            progress=job.progress.model_dump(),
            metrics=job.metrics,
            timings=job.timings,
            error=job.error,
            attempt=job.attempt,
            worker=job.worker,
            version_id=job.version_id,
            created_at=job.created_at,
            created_by=job.created_by,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            lease_owner=job.lease_owner,
            lease_expires_at=job.lease_expires_at,
            resumed_from=job.resumed_from,
        )
        async with self.database.session() as session, session.begin():
            session.add(row)

    async def get(self, job_id: str) -> TrainingJobRead:
        async with self.database.session() as session:
            row = await session.get(TrainingJobRow, job_id)
        if row is None:
            raise _not_found(job_id)
        return _read(row)

    async def list_jobs(
        self, *, model: str | None, state: JobState | None, limit: int, offset: int
    ) -> Page[TrainingJobRead]:
        where = []
        if model is not None:
            where.append(TrainingJobRow.model == model)
        if state is not None:
            where.append(TrainingJobRow.state == state)
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).select_from(TrainingJobRow).where(*where)) or 0
            rows = (
                await session.scalars(
                    select(TrainingJobRow)
                    .where(*where)
                    .order_by(TrainingJobRow.created_at.desc(), TrainingJobRow.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return Page(items=[_read(r) for r in rows], total=total, limit=limit, offset=offset)

    async def _transition(
        self, job_id: str, states: list[str], values: dict[str, Any], *where: ColumnElement[bool]
    ) -> bool:
        async with self.database.session() as session, session.begin():
            changed = await session.scalar(
                update(TrainingJobRow)
                .where(TrainingJobRow.id == job_id, TrainingJobRow.state.in_(states), *where)
                .values(**values)
                .returning(TrainingJobRow.id)
            )
            if changed is None and await session.get(TrainingJobRow, job_id) is None:
                raise _not_found(job_id)
        return changed is not None

    async def start(self, job_id: str, *, worker: str | None, at: datetime) -> bool:
        return await self._transition(
            job_id,
            ["queued"],
            {
                "state": "running",
                "attempt": TrainingJobRow.attempt + 1,
                "worker": worker,
                "started_at": at,
                "heartbeat_at": at,
            },
        )

    async def report(
        self,
        job_id: str,
        progress: JobProgress,
        *,
        worker: str | None,
        at: datetime,
        owner: str | None = None,
        lease_until: datetime | None = None,
        resumed_from: int | None = None,
    ) -> bool:
        values: dict[str, Any] = {"progress": progress.model_dump(), "heartbeat_at": at}
        if worker is not None:
            values["worker"] = worker
        if lease_until is not None:
            values["lease_expires_at"] = lease_until
        if resumed_from is not None:
            values["resumed_from"] = resumed_from
        return await self._transition(job_id, ["running"], values, *_held_by(owner))

    async def claim(
        self, job_id: str, *, owner: str, at: datetime, lease_until: datetime
    ) -> TrainingJobRead | None:
        free = or_(
            TrainingJobRow.state == "queued",
            and_(
                TrainingJobRow.state == "running",
                or_(TrainingJobRow.lease_owner.is_(None), TrainingJobRow.lease_expires_at < at),
            ),
        )
        values = {
            "state": "running",
            "attempt": TrainingJobRow.attempt + 1,
            "lease_owner": owner,
            "lease_expires_at": lease_until,
            "started_at": func.coalesce(TrainingJobRow.started_at, at),
            "heartbeat_at": at,
            "resumed_from": None,
        }
        if not await self._transition(job_id, ["queued", "running"], values, free):
            return None
        return await self.get(job_id)

    async def release(self, job_id: str, *, owner: str) -> bool:
        values = {"lease_owner": None, "lease_expires_at": None, "attempt": TrainingJobRow.attempt - 1}
        return await self._transition(job_id, ["running"], values, *_held_by(owner))

    async def retry(self, job_id: str, *, owner: str, at: datetime, error: str) -> int | None:
        values = {"attempt": TrainingJobRow.attempt + 1, "error": error, "heartbeat_at": at}
        values["resumed_from"] = None
        if not await self._transition(job_id, ["running"], values, *_held_by(owner)):
            return None
        return (await self.get(job_id)).attempt

    async def stale(self, *, at: datetime, queued_before: datetime, limit: int = 100) -> list[str]:
        unfollowed = or_(
            and_(
                TrainingJobRow.state == "running",
                or_(TrainingJobRow.lease_owner.is_(None), TrainingJobRow.lease_expires_at < at),
            ),
            and_(TrainingJobRow.state == "queued", TrainingJobRow.created_at < queued_before),
        )
        async with self.database.session() as session:
            ids = await session.scalars(
                select(TrainingJobRow.id)
                .where(unfollowed)
                .order_by(TrainingJobRow.created_at, TrainingJobRow.id)
                .limit(limit)
            )
            return list(ids)

    async def request_cancel(self, job_id: str) -> TrainingJobRead:
        await self._transition(job_id, ["queued", "running"], {"cancel_requested": True})
        return await self.get(job_id)

    async def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        at: datetime,
        metrics: dict[str, float] | None = None,
        timings: dict[str, float] | None = None,
        error: str | None = None,
        version_id: str | None = None,
        progress: JobProgress | None = None,
        owner: str | None = None,
    ) -> bool:
        if state not in TERMINAL:
            raise ValueError(f"{state!r} is not a final state")
        values: dict[str, Any] = {
            "state": state,
            "finished_at": at,
            "heartbeat_at": at,
            "error": error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if metrics is not None:
            values["metrics"] = metrics
        if timings is not None:
            values["timings"] = timings
        if version_id is not None:
            values["version_id"] = version_id
        if progress is not None:
            values["progress"] = progress.model_dump()
        return await self._transition(job_id, ["queued", "running"], values, *_held_by(owner))

    async def record_trials(self, job_id: str, trials: list[TrainingTrialRead]) -> None:
        if not trials:
            return
        async with self.database.session() as session, session.begin():
            if await session.get(TrainingJobRow, job_id) is None:
                raise _not_found(job_id)
            existing = {
                row.number: row
                for row in await session.scalars(
                    select(TrainingTrialRow).where(
                        TrainingTrialRow.job_id == job_id,
                        TrainingTrialRow.number.in_([t.number for t in trials]),
                    )
                )
            }
            for trial in trials:
                values = trial.model_dump(exclude={"number", "best"})
                row = existing.get(trial.number)
                if row is None:
                    row = TrainingTrialRow(job_id=job_id, number=trial.number)
                    session.add(row)
                    existing[trial.number] = row
                for name, value in values.items():
                    setattr(row, name, value)

    async def list_trials(self, job_id: str) -> list[TrainingTrialRead]:
        async with self.database.session() as session:
            if await session.get(TrainingJobRow, job_id) is None:
                raise _not_found(job_id)
            rows = (
                await session.scalars(
                    select(TrainingTrialRow)
                    .where(TrainingTrialRow.job_id == job_id)
                    .order_by(TrainingTrialRow.number)
                )
            ).all()
        return [
            TrainingTrialRead(
                number=row.number,
                params=row.params,
                state=cast(TrialState, row.state),
                metrics=row.metrics or {},
                value=row.value,
                error=row.error,
                worker=row.worker,
                started_at=_utc(row.started_at),
                finished_at=_utc(row.finished_at),
                duration_seconds=row.duration_seconds,
            )
            for row in rows
        ]


def _held_by(owner: str | None) -> list[ColumnElement[bool]]:
    return [] if owner is None else [TrainingJobRow.lease_owner == owner]
