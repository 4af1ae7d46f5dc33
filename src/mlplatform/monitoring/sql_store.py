"""The drift store on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import NotFound
from mlplatform.monitoring.schemas import DriftReportRead, DriftReportSummary, FeatureDriftRead
from mlplatform.monitoring.store import DriftStore, StoredReference
from mlplatform.monitoring.tables import DriftReferenceRow, DriftReportRow

_SUMMARY_COLUMNS = [c for c in DriftReportRow.__table__.columns if c.name != "features"]


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "model": row.model,
        "version": row.version,
        "version_id": row.version_id,
        "start": as_utc(row.window_start),
        "end": as_utc(row.window_end),
        "trigger": row.trigger,
        "created_at": as_utc(row.created_at),
        "status": row.status,
        "drift": row.drift,
        "drifted_features": row.drifted_features,
        "alpha": row.alpha,
        "tests": row.tests,
        "sampled_rows": row.sampled_rows,
        "reference_rows": row.reference_rows,
    }


def _report(row: DriftReportRow) -> DriftReportRead:
    features = [FeatureDriftRead.model_validate(f) for f in row.features]
    return DriftReportRead.model_validate({**_summary(row), "features": features})


class SqlDriftStore(DriftStore):
    def __init__(self, database: Database) -> None:
        self.database = database
        self._insert = postgresql.insert if database.backend == "postgresql" else sqlite.insert

    async def put_reference(self, reference: StoredReference) -> None:
        values = {
            "version_id": reference.version_id,
            "model": reference.model,
            "version": reference.version,
            "source": reference.source,
            "dataset_id": reference.dataset_id,
            "rows": reference.rows,
            "source_rows": reference.source_rows,
            "profile": reference.profile,
            "created_at": reference.created_at,
            "created_by": reference.created_by,
        }
        statement = self._insert(DriftReferenceRow).values(values)
        replaced = {k: statement.excluded[k] for k in values if k != "version_id"}
        async with self.database.session() as session, session.begin():
            await session.execute(
                statement.on_conflict_do_update(index_elements=["version_id"], set_=replaced)
            )

    async def get_reference(self, version_id: str) -> StoredReference | None:
        async with self.database.session() as session:
            row = await session.get(DriftReferenceRow, version_id)
        if row is None:
            return None
        return StoredReference(
            version_id=row.version_id,
            model=row.model,
            version=row.version,
            source=cast(Any, row.source),
            dataset_id=row.dataset_id,
            rows=row.rows,
            source_rows=row.source_rows,
            profile=row.profile,
            created_at=as_utc(row.created_at),
            created_by=row.created_by,
        )

    async def add_report(self, report: DriftReportRead) -> None:
        row = DriftReportRow(
            id=report.id,
            model=report.model,
            version=report.version,
            version_id=report.version_id,
            window_start=report.start,
            window_end=report.end,
            trigger=report.trigger,
            created_at=report.created_at,
            status=report.status,
            drift=report.drift,
            drifted_features=report.drifted_features,
            alpha=report.alpha,
            tests=report.tests,
            sampled_rows=report.sampled_rows,
            reference_rows=report.reference_rows,
            features=[f.model_dump(mode="json") for f in report.features],
        )
        async with self.database.session() as session, session.begin():
            session.add(row)

    async def get_report(self, *, model: str, report_id: str) -> DriftReportRead:
        async with self.database.session() as session:
            row = await session.get(DriftReportRow, report_id)
        if row is None or row.model != model:
            raise NotFound(f"model {model!r} has no drift report {report_id[:80]!r}", details={"field": "id"})
        return _report(row)

    async def list_reports(
        self, *, model: str, version: int | None, limit: int, offset: int
    ) -> tuple[list[DriftReportSummary], int]:
        where = [DriftReportRow.model == model]
        if version is not None:
            where.append(DriftReportRow.version == version)
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).select_from(DriftReportRow).where(*where))
            rows = await session.execute(
                select(*_SUMMARY_COLUMNS)
                .where(*where)
                .order_by(DriftReportRow.created_at.desc(), DriftReportRow.id.desc())
                .limit(limit)
                .offset(offset)
            )
            items = [DriftReportSummary.model_validate(_summary(row)) for row in rows]
        return items, int(total or 0)

    async def latest_summaries(self, models: Sequence[str]) -> dict[str, DriftReportSummary]:
        if not models:
            return {}
        newest = (
            select(DriftReportRow.model, func.max(DriftReportRow.created_at).label("newest"))
            .where(DriftReportRow.model.in_(list(models)))
            .group_by(DriftReportRow.model)
            .subquery()
        )
        query = select(*_SUMMARY_COLUMNS).join(
            newest,
            (DriftReportRow.model == newest.c.model) & (DriftReportRow.created_at == newest.c.newest),
        )
        found: dict[str, DriftReportSummary] = {}
        async with self.database.session() as session:
            for row in await session.execute(query):
                summary = DriftReportSummary.model_validate(_summary(row))
                if summary.model not in found or summary.id > found[summary.model].id:  # a tie: the larger id
                    found[summary.model] = summary
        return found

    async def latest_report(self, *, model: str, version_id: str | None) -> DriftReportRead | None:
        where = [DriftReportRow.model == model]
        if version_id is not None:
            where.append(DriftReportRow.version_id == version_id)
        async with self.database.session() as session:
            row = await session.scalar(
                select(DriftReportRow)
                .where(*where)
                .order_by(DriftReportRow.created_at.desc(), DriftReportRow.id.desc())
                .limit(1)
            )
        return _report(row) if row is not None else None
