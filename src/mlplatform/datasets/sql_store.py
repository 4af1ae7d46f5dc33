"""The dataset store on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import delete, func, select

from mlplatform.clock import as_utc
from mlplatform.datasets.schemas import ColumnRead, DatasetFormat, DatasetRead, Page
from mlplatform.datasets.store import DatasetStore
from mlplatform.datasets.tables import DatasetRow
from mlplatform.db import Database
from mlplatform.errors import NotFound


def _read(row: DatasetRow) -> DatasetRead:
    return DatasetRead(
        id=row.id,
        name=row.name,
        format=cast(DatasetFormat, row.format),
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        rows=row.row_count,
        columns=[ColumnRead.model_validate(c) for c in row.columns],
        storage_key=row.storage_key,
        description=row.description,
        tags=row.tags or {},
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )


def _not_found(dataset_id: str) -> NotFound:
    return NotFound(f"no dataset with id {dataset_id[:80]!r}", details={"field": "id"})


class SqlDatasetStore(DatasetStore):
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, dataset: DatasetRead) -> None:
        row = DatasetRow(
            id=dataset.id,
            name=dataset.name,
            format=dataset.format,
            size_bytes=dataset.size_bytes,
            sha256=dataset.sha256,
            row_count=dataset.rows,
            columns=[c.model_dump() for c in dataset.columns],
            storage_key=dataset.storage_key,
            description=dataset.description,
            tags=dataset.tags,
            created_at=dataset.created_at,
            created_by=dataset.created_by,
        )
        async with self.database.session() as session, session.begin():
            session.add(row)

    async def get(self, dataset_id: str) -> DatasetRead:
        async with self.database.session() as session:
            row = await session.get(DatasetRow, dataset_id)
        if row is None:
            raise _not_found(dataset_id)
        return _read(row)

    async def list_datasets(self, name: str | None, limit: int, offset: int) -> Page[DatasetRead]:
        where = [DatasetRow.name == name] if name is not None else []
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).select_from(DatasetRow).where(*where)) or 0
            rows = (
                await session.scalars(
                    select(DatasetRow)
                    .where(*where)
                    .order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return Page(items=[_read(r) for r in rows], total=total, limit=limit, offset=offset)

    async def delete(self, dataset_id: str) -> str:
        async with self.database.session() as session, session.begin():
            key: str | None = await session.scalar(
                delete(DatasetRow).where(DatasetRow.id == dataset_id).returning(DatasetRow.storage_key)
            )
        if key is None:
            raise _not_found(dataset_id)
        return key

    async def storage_keys(self) -> set[str]:
        async with self.database.session() as session:
            return set((await session.scalars(select(DatasetRow.storage_key))).all())
