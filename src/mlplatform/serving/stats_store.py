"""Serving stats persistence: the interface, and its one implementation on SQL (SQLite and PostgreSQL)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.serving.tables import BUCKET_COLUMNS, STAT_BUCKETS, ServingStatRow

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


# (model, minute): a minute is an aware UTC datetime with zero seconds.
MinuteKey = tuple[str, datetime]


class ServingStatsStore(ABC):
    """Per-minute serving counts of every server process.

    Contract, for every backend:
    - Each process (`instance`) writes only its own rows; `save` replaces the rows it names (one per model and
      minute), so a process saves a minute's running totals as often as it likes and nothing counts twice.
    - Reads add up every instance's rows. Times are aware UTC datetimes; `start` is inclusive and `end`
      exclusive, compared with a row's minute.
    """

    @abstractmethod
    async def save(self, instance: str, counts: Mapping[MinuteKey, Counts], *, at: datetime) -> None:
        """Insert or replace this instance's rows for these (model, minute) keys, in one transaction."""

    @abstractmethod
    async def per_minute(self, model: str, start: datetime, end: datetime) -> dict[datetime, Counts]:
        """The model's counts per minute (every instance's added up); minutes without a row are left out."""

    @abstractmethod
    async def by_model(self, start: datetime, end: datetime) -> dict[str, Counts]:
        """Each model's counts over the window (every instance and minute added up)."""

    @abstractmethod
    async def instances(self, model: str, start: datetime, end: datetime) -> set[str]:
        """The server processes that saved counts for the model in the window."""

    @abstractmethod
    async def prune(self, before: datetime) -> int:
        """Delete every row of a minute before `before`; how many went."""


def _stored(at: datetime) -> datetime:
    return as_utc(at).astimezone(UTC)


_SUMS = (
    func.sum(ServingStatRow.predictions),
    func.sum(ServingStatRow.errors),
    func.sum(ServingStatRow.latency_sum_ms),
    *(func.sum(getattr(ServingStatRow, column)) for column in BUCKET_COLUMNS),
)


def _counts(sums: tuple[object, ...]) -> Counts:
    """A row of `_SUMS` (SUM of BigInteger comes back as Decimal on PostgreSQL)."""
    predictions, errors, latency, *buckets = sums
    return Counts(
        int(predictions or 0),  # type: ignore[call-overload]
        int(errors or 0),  # type: ignore[call-overload]
        float(latency or 0.0),  # type: ignore[arg-type]
        tuple(int(b or 0) for b in buckets),  # type: ignore[call-overload]
    )


class SqlServingStatsStore(ServingStatsStore):
    def __init__(self, database: Database) -> None:
        self.database = database
        self._insert = postgresql.insert if database.backend == "postgresql" else sqlite.insert

    async def save(self, instance: str, counts: Mapping[MinuteKey, Counts], *, at: datetime) -> None:
        if not counts:
            return
        rows = [
            {
                "model": model,
                "minute": _stored(minute),
                "instance": instance,
                "predictions": c.predictions,
                "errors": c.errors,
                "latency_sum_ms": c.latency_sum_ms,
                **dict(zip(BUCKET_COLUMNS, c.buckets, strict=True)),
                "updated_at": at,
            }
            for (model, minute), c in sorted(counts.items())
        ]
        statement = self._insert(ServingStatRow)
        key = ("model", "minute", "instance")
        replaced = {k: statement.excluded[k] for k in rows[0] if k not in key}
        async with self.database.session() as session, session.begin():
            await session.execute(
                statement.on_conflict_do_update(index_elements=list(key), set_=replaced), rows
            )

    async def per_minute(self, model: str, start: datetime, end: datetime) -> dict[datetime, Counts]:
        query = (
            select(ServingStatRow.minute, *_SUMS)
            .where(
                ServingStatRow.model == model,
                ServingStatRow.minute >= _stored(start),
                ServingStatRow.minute < _stored(end),
            )
            .group_by(ServingStatRow.minute)
        )
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {as_utc(row[0]): _counts(tuple(row[1:])) for row in rows}

    async def by_model(self, start: datetime, end: datetime) -> dict[str, Counts]:
        query = (
            select(ServingStatRow.model, *_SUMS)
            .where(ServingStatRow.minute >= _stored(start), ServingStatRow.minute < _stored(end))
            .group_by(ServingStatRow.model)
        )
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row[0]: _counts(tuple(row[1:])) for row in rows}

    async def instances(self, model: str, start: datetime, end: datetime) -> set[str]:
        query = (
            select(ServingStatRow.instance)
            .where(
                ServingStatRow.model == model,
                ServingStatRow.minute >= _stored(start),
                ServingStatRow.minute < _stored(end),
            )
            .distinct()
        )
        async with self.database.engine.connect() as conn:
            return set((await conn.scalars(query)).all())

    async def prune(self, before: datetime) -> int:
        async with self.database.session() as session, session.begin():
            result = await session.execute(
                delete(ServingStatRow).where(ServingStatRow.minute < _stored(before))
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
