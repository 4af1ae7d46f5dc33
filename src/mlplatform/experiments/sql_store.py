"""The experiment store on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import Conflict, NotFound
from mlplatform.experiments.schemas import (
    CanarySpec,
    ExperimentRead,
    ExperimentState,
    ExperimentType,
    Metric,
    Page,
    VariantRead,
)
from mlplatform.experiments.store import ExperimentStore, Tally
from mlplatform.experiments.tables import ExperimentRow, ExperimentTallyRow


def _read(row: ExperimentRow) -> ExperimentRead:
    spec = row.spec
    return ExperimentRead(
        id=row.id,
        name=row.name,
        model=row.model,
        type=cast(ExperimentType, row.type),
        state=cast(ExperimentState, row.state),
        variants=[VariantRead.model_validate(v) for v in row.variants],
        sticky=spec["sticky"],
        metric=cast(Metric, spec["metric"]),
        min_samples=spec["min_samples"],
        min_effect=spec.get("min_effect"),
        alpha=spec["alpha"],
        max_duration_seconds=spec.get("max_duration_seconds"),
        canary=CanarySpec.model_validate(spec["canary"]) if spec.get("canary") else None,
        step=row.step,
        step_started_at=as_utc(row.step_started_at) if row.step_started_at else None,
        winner=row.winner,
        reason=row.reason,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
        ended_at=as_utc(row.ended_at) if row.ended_at else None,
        ended_by=row.ended_by,
    )


def _not_found(experiment_id: str) -> NotFound:
    return NotFound(f"no experiment with id {experiment_id[:80]!r}", details={"field": "id"})


class SqlExperimentStore(ExperimentStore):
    def __init__(self, database: Database) -> None:
        self.database = database
        self._insert = postgresql.insert if database.backend == "postgresql" else sqlite.insert

    async def create(self, experiment: ExperimentRead) -> None:
        spec = experiment.model_dump(
            mode="json",
            include={"sticky", "metric", "min_samples", "min_effect", "alpha", "max_duration_seconds"},
        )
        spec["canary"] = experiment.canary.model_dump() if experiment.canary else None
        row = ExperimentRow(
            id=experiment.id,
            name=experiment.name,
            model=experiment.model,
            type=experiment.type,
            state=experiment.state,
            variants=[v.model_dump() for v in experiment.variants],
            spec=spec,
            step=experiment.step,
            step_started_at=experiment.step_started_at,
            created_at=experiment.created_at,
            created_by=experiment.created_by,
        )
        try:
            async with self.database.session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            running = await self.running(experiment.model)
            which = f" ({running[0].id}, {running[0].name!r})" if running else ""
            raise Conflict(
                f"model {experiment.model!r} already has a running experiment{which}: "
                "stop or promote it first",
                details={"field": "model"},
            ) from None

    async def get(self, experiment_id: str) -> ExperimentRead:
        async with self.database.session() as session:
            row = await session.get(ExperimentRow, experiment_id)
        if row is None:
            raise _not_found(experiment_id)
        return _read(row)

    async def list_experiments(
        self, *, model: str | None, state: ExperimentState | None, limit: int, offset: int
    ) -> Page[ExperimentRead]:
        where = []
        if model is not None:
            where.append(ExperimentRow.model == model)
        if state is not None:
            where.append(ExperimentRow.state == state)
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).select_from(ExperimentRow).where(*where)) or 0
            rows = (
                await session.scalars(
                    select(ExperimentRow)
                    .where(*where)
                    .order_by(ExperimentRow.created_at.desc(), ExperimentRow.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return Page(items=[_read(r) for r in rows], total=total, limit=limit, offset=offset)

    async def running(self, model: str | None = None) -> list[ExperimentRead]:
        query = select(ExperimentRow).where(ExperimentRow.state == "running")
        if model is not None:
            query = query.where(ExperimentRow.model == model)
        async with self.database.session() as session:
            rows = (await session.scalars(query.order_by(ExperimentRow.model))).all()
        return [_read(r) for r in rows]

    async def _update_running(
        self, experiment_id: str, values: dict[str, Any], *, step: int | None = None
    ) -> bool:
        conditions = [ExperimentRow.id == experiment_id, ExperimentRow.state == "running"]
        if step is not None:
            conditions.append(ExperimentRow.step == step)
        async with self.database.session() as session, session.begin():
            changed = await session.scalar(
                update(ExperimentRow).where(*conditions).values(**values).returning(ExperimentRow.id)
            )
            if changed is None and await session.get(ExperimentRow, experiment_id) is None:
                raise _not_found(experiment_id)
        return changed is not None

    async def set_weights(
        self, experiment_id: str, variants: list[VariantRead], *, step: int, at: datetime
    ) -> bool:
        values = {"variants": [v.model_dump() for v in variants], "step": step, "step_started_at": at}
        return await self._update_running(experiment_id, values, step=step - 1)

    async def end(
        self,
        experiment_id: str,
        state: ExperimentState,
        *,
        at: datetime,
        by: str,
        winner: str | None = None,
        reason: str | None = None,
        variants: list[VariantRead] | None = None,
    ) -> bool:
        if state == "running":
            raise ValueError("an experiment ends promoted, stopped or rolled back")
        values: dict[str, Any] = {
            "state": state,
            "ended_at": at,
            "ended_by": by,
            "winner": winner,
            "reason": reason,
        }
        if variants is not None:
            values["variants"] = [v.model_dump() for v in variants]
        return await self._update_running(experiment_id, values)

    async def save_tallies(
        self, instance: str, tallies: dict[tuple[str, str], Tally], *, at: datetime
    ) -> None:
        if not tallies:
            return
        rows = [
            {
                "experiment_id": experiment,
                "variant": variant,
                "instance": instance,
                "requests": t.requests,
                "errors": t.errors,
                "compared": t.compared,
                "agreed": t.agreed,
                "difference_sum": t.difference_sum,
                "numeric": t.numeric,
                "updated_at": at,
            }
            for (experiment, variant), t in sorted(tallies.items())
        ]
        statement = self._insert(ExperimentTallyRow)
        key = ("experiment_id", "variant", "instance")
        replaced = {k: statement.excluded[k] for k in rows[0] if k not in key}
        async with self.database.session() as session, session.begin():
            await session.execute(
                statement.on_conflict_do_update(index_elements=list(key), set_=replaced), rows
            )

    async def tallies(self, experiment_id: str) -> dict[tuple[str, str], Tally]:
        async with self.database.session() as session:
            rows = (
                await session.scalars(
                    select(ExperimentTallyRow).where(ExperimentTallyRow.experiment_id == experiment_id)
                )
            ).all()
        return {
            (r.variant, r.instance): Tally(
                r.requests, r.errors, r.compared, r.agreed, r.difference_sum, r.numeric
            )
            for r in rows
        }
