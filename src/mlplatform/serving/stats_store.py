"""Serving stats persistence: the interface, and its one implementation on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.serving.tables import (
    BUCKET_COLUMNS,
    STAT_BUCKETS,
    ServingCounts,
    ServingStatHourRow,
    ServingStatRow,
)

_EMPTY = (0,) * STAT_BUCKETS


@dataclass(frozen=True, slots=True)
class Counts:
    """What was counted for a model over some time: predictions answered (rows), requests that failed,
    answered requests per latency-histogram cell (`serving.metrics.LATENCY_BUCKETS_MS`, then +Inf) and the
    sum of their latencies in ms."""

    predictions: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    buckets: tuple[int, ...] = field(default=_EMPTY)

    @property
    def requests(self) -> int:
        return sum(self.buckets)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.predictions + other.predictions,
            self.errors + other.errors,
            self.latency_sum_ms + other.latency_sum_ms,
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.predictions - other.predictions,
            self.errors - other.errors,
            self.latency_sum_ms - other.latency_sum_ms,
            tuple(a - b for a, b in zip(self.buckets, other.buckets, strict=True)),
        )


# (model, period): a period is the start of a minute or an hour, an aware UTC datetime.
PeriodKey = tuple[str, datetime]


class ServingStatsStore(ABC):
    """Serving counts of every server process, per model and minute and per model and hour.

    Contract, for every backend:
    - Each process (`instance`) writes only its own rows; `save` replaces the rows it names (one per model and
      period), so a process saves a period's running totals as often as it likes and nothing counts twice.
    - Reads add up every instance's rows, from the minute rows, or the hour rows with `hourly`. Times are
      aware UTC datetimes; `start` is inclusive and `end` exclusive, compared with a row's period (its start).
    """

    @abstractmethod
    async def save(
        self,
        instance: str,
        minutes: Mapping[PeriodKey, Counts],
        hours: Mapping[PeriodKey, Counts],
        *,
        at: datetime,
    ) -> None:
        """Insert or replace this instance's rows for these (model, minute) and (model, hour) keys, in one
        transaction."""

    @abstractmethod
    async def periods(
        self, model: str, start: datetime, end: datetime, *, hourly: bool = False
    ) -> dict[datetime, Counts]:
        """The model's counts per period (every instance's added up); periods without a row are left out."""

    @abstractmethod
    async def by_model(self, start: datetime, end: datetime, *, hourly: bool = False) -> dict[str, Counts]:
        """Each model's counts over the window (every instance and period added up)."""

    @abstractmethod
    async def instances(
        self, model: str, start: datetime, end: datetime, *, hourly: bool = False
    ) -> set[str]:
        """The server processes that saved counts for the model in the window."""

    @abstractmethod
    async def prune(self, before: datetime) -> int:
        """Delete every minute that starts before `before` and every hour that ended by then; how many
        rows went."""


def _stored(at: datetime) -> datetime:
    return as_utc(at).astimezone(UTC)


def _sums(table: type[ServingCounts]) -> tuple[Any, ...]:
    return (
        func.sum(table.predictions),
        func.sum(table.errors),
        func.sum(table.latency_sum_ms),
        *(func.sum(getattr(table, column)) for column in BUCKET_COLUMNS),
    )


def _counts(sums: Sequence[Any]) -> Counts:
    """A row of `_sums` (SUM of BigInteger comes back as Decimal on PostgreSQL)."""
    predictions, errors, latency, *buckets = sums
    return Counts(
        int(predictions or 0), int(errors or 0), float(latency or 0.0), tuple(int(b or 0) for b in buckets)
    )


def _table(hourly: bool) -> type[ServingCounts]:
    return ServingStatHourRow if hourly else ServingStatRow


def _window(table: type[ServingCounts], start: datetime, end: datetime) -> tuple[ColumnElement[bool], ...]:
    return table.period >= _stored(start), table.period < _stored(end)


class SqlServingStatsStore(ServingStatsStore):
    def __init__(self, database: Database) -> None:
        self.database = database
        self._insert = postgresql.insert if database.backend == "postgresql" else sqlite.insert

    async def save(
        self,
        instance: str,
        minutes: Mapping[PeriodKey, Counts],
        hours: Mapping[PeriodKey, Counts],
        *,
        at: datetime,
    ) -> None:
        if not minutes and not hours:
            return
        async with self.database.session() as session, session.begin():
            for table, counts in ((ServingStatRow, minutes), (ServingStatHourRow, hours)):
                if not counts:
                    continue
                rows = [
                    {
                        "model": model,
                        "period": _stored(period),
                        "instance": instance,
                        "predictions": c.predictions,
                        "errors": c.errors,
                        "latency_sum_ms": c.latency_sum_ms,
                        **dict(zip(BUCKET_COLUMNS, c.buckets, strict=True)),
                        "updated_at": at,
                    }
                    for (model, period), c in sorted(counts.items())
                ]
                statement = self._insert(table)
                key = ("model", "period", "instance")
                replaced = {k: statement.excluded[k] for k in rows[0] if k not in key}
                await session.execute(
                    statement.on_conflict_do_update(index_elements=list(key), set_=replaced), rows
                )

    async def periods(
        self, model: str, start: datetime, end: datetime, *, hourly: bool = False
    ) -> dict[datetime, Counts]:
        table = _table(hourly)
        query = (
            select(table.period, *_sums(table))
            .where(table.model == model, *_window(table, start, end))
            .group_by(table.period)
        )
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {as_utc(row[0]): _counts(row[1:]) for row in rows}

    async def by_model(self, start: datetime, end: datetime, *, hourly: bool = False) -> dict[str, Counts]:
        table = _table(hourly)
        query = select(table.model, *_sums(table)).where(*_window(table, start, end)).group_by(table.model)
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row[0]: _counts(row[1:]) for row in rows}

    async def instances(
        self, model: str, start: datetime, end: datetime, *, hourly: bool = False
    ) -> set[str]:
        table = _table(hourly)
        query = select(table.instance).where(table.model == model, *_window(table, start, end)).distinct()
        async with self.database.engine.connect() as conn:
            return set((await conn.scalars(query)).all())

    async def prune(self, before: datetime) -> int:
        deleted = 0
        async with self.database.session() as session, session.begin():
            hour = _stored(before).replace(minute=0, second=0, microsecond=0)
            for table, cut in ((ServingStatRow, _stored(before)), (ServingStatHourRow, hour)):
                result = await session.execute(delete(table).where(table.period < cut))
                deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
        return deleted
