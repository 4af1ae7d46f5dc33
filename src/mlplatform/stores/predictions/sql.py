"""`PredictionLogStore` on SQLite and PostgreSQL: the one module that reads or writes the log and feedback."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    FromClause,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.ids import block_ids, new_ids
from mlplatform.monitoring.tables import FeedbackRow
from mlplatform.serving.tables import PredictionBatchRow, PredictionLogRow
from mlplatform.stores.predictions.appenders import appender_for
from mlplatform.stores.predictions.base import (
    FeedbackEntry,
    FeedbackHistoryEntry,
    LabelledPredictions,
    LoggedPrediction,
    LogRecord,
    PredictionLogStore,
    PredictionRef,
)
from mlplatform.stores.predictions.rows import (
    block,
    copy_text,
    feedback_row,
    inputs_of,
    labelled,
    probabilities_of,
    ref_of,
    single,
    stored_time,
)

SINGLES: Table = PredictionLogRow.__table__  # type: ignore[assignment]
BLOCKS: Table = PredictionBatchRow.__table__  # type: ignore[assignment]
FEEDBACK: Table = FeedbackRow.__table__  # type: ignore[assignment]
SIZE = BLOCKS.c.count.label("size")  # a row's `count` would be the tuple method
_ID = re.compile(r"[0-9a-f]{26}")
FEEDBACK_COLUMNS = tuple(column.name for column in FEEDBACK.columns)
# A concurrent writer of the same prediction makes the insert fail (one current value each); a retry then
# finds its value and replaces it. Each round at least one writer wins, so this many writers always finish.
WRITE_ATTEMPTS = 10


def _window(
    table: Table,
    model: str | None,
    version: str | None,
    start: datetime | None,
    end: datetime | None,
    arm: tuple[str, str] | None = None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if arm is not None:
        conditions += [table.c.experiment == arm[0], table.c.variant == arm[1]]
    if model is not None:
        conditions.append(table.c.model == model)
    if version is not None:
        conditions.append(table.c.version == version)
    if start is not None:
        conditions.append(table.c.created_at >= stored_time(start))
    if end is not None:
        conditions.append(table.c.created_at < stored_time(end))
    return conditions


class SqlPredictionLogStore(PredictionLogStore):
    """One implementation for both databases; it branches on the dialect for writes (COPY on PostgreSQL)
    and for passing a list of values as one parameter (an array on PostgreSQL, JSON on SQLite)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.postgres = database.backend == "postgresql"
        self._appender = appender_for(database)

    # --- writing the log --------------------------------------------------------------------------------

    def append(self, records: Sequence[LogRecord]) -> None:
        self._appender.write(records)

    def close_appender(self) -> None:
        self._appender.close()

    # --- helpers ------------------------------------------------------------------------------------------

    def _values(self, values: Sequence[Any], type_: TypeEngine[Any] | None = None) -> FromClause:
        """`values` as a one-column table (`.c.value`), sent as one parameter whatever its length."""
        if self.postgres and type_ is not None:
            array = literal(list(values), ARRAY(type_))
            return func.unnest(array).table_valued("value").render_derived()
        document = orjson.dumps(list(values)).decode()
        if self.postgres:  # strings as one JSON text: psycopg dumps a text[] element by element in Python
            elements = func.json_array_elements_text(cast(literal(document, Text()), JSON()))
            return elements.table_valued("value").render_derived()
        return func.json_each(document).table_valued("value")

    def _one_of(self, column: Any, values: Sequence[Any], type_: TypeEngine[Any] | None = None) -> Any:
        return column.in_(select(self._values(values, type_).c.value))

    # --- reading the log ------------------------------------------------------------------------------

    async def query(
        self,
        *,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        arm: tuple[str, str] | None = None,
    ) -> list[LoggedPrediction]:
        def where(table: Table) -> list[ColumnElement[bool]]:
            conditions = _window(table, model, version, start, end, arm)
            if request_id is not None:
                conditions.append(table.c.request_id == request_id)
            return conditions

        singles = select(SINGLES).where(*where(SINGLES)).order_by(SINGLES.c.created_at.desc()).limit(limit)
        # Blocks hold many predictions: take the newest ones until `limit` predictions are covered.
        newest = (BLOCKS.c.created_at.desc(), BLOCKS.c.id.desc())
        running = func.sum(BLOCKS.c.count).over(order_by=newest).label("running")
        ranked = select(BLOCKS, running).where(*where(BLOCKS)).subquery()
        blocks = (
            select(*(ranked.c[column.name] for column in BLOCKS.columns))
            .where(ranked.c.running - ranked.c.count < limit)
            .order_by(ranked.c.created_at.desc(), ranked.c.id.desc())
        )
        async with self.database.engine.connect() as conn:
            found = [single(row) for row in (await conn.execute(singles)).mappings()]
            for row in (await conn.execute(blocks)).mappings():
                found += block(row)
        found.sort(key=lambda entry: entry.created_at, reverse=True)  # stable: a block keeps its order
        return found[:limit]

    async def count(
        self,
        *,
        model: str,
        version: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        arm: tuple[str, str] | None = None,
    ) -> int:
        singles = (
            select(func.count())
            .select_from(SINGLES)
            .where(*_window(SINGLES, model, version, start, end, arm))
        )
        blocks = select(func.coalesce(func.sum(BLOCKS.c.count), 0)).where(
            *_window(BLOCKS, model, version, start, end, arm)
        )
        async with self.database.engine.connect() as conn:
            return int((await conn.scalar(singles)) or 0) + int((await conn.scalar(blocks)) or 0)

    async def counts(self, *, model: str, version: str | None = None, edges: Sequence[datetime]) -> list[int]:
        if len(edges) < 2:
            return []
        found = [0] * (len(edges) - 1)
        times = [stored_time(edge) for edge in edges]
        async with self.database.engine.connect() as conn:
            for table, size in ((SINGLES, "1"), (BLOCKS, "count")):
                # cumulative: rows before each upper edge, so each bucket is one subtraction. Written as text
                # (fixed column names, bound times): building hundreds of case() expressions costs ms.
                sums = ", ".join(
                    f"coalesce(sum(case when created_at < :edge_{i} then {size} else 0 end), 0)"
                    for i in range(1, len(times))
                )
                stamp = table.c.created_at.type
                columns = text(sums).bindparams(
                    *(bindparam(f"edge_{i}", times[i], type_=stamp) for i in range(1, len(times)))
                )
                query = (
                    select(columns)
                    .select_from(table)
                    .where(*_window(table, model, version, edges[0], edges[-1]))
                )
                row = (await conn.execute(query)).one()
                below = 0
                for index, cumulative in enumerate(row):
                    found[index] += int(cumulative) - below
                    below = int(cumulative)
        return found

    async def last_predictions(self, models: Sequence[str]) -> dict[str, datetime]:
        found: dict[str, datetime] = {}
        if not models:
            return found
        async with self.database.engine.connect() as conn:
            for table in (SINGLES, BLOCKS):  # one max per model, each from the (model, created_at) index
                newest = (
                    select(table.c.model, func.max(table.c.created_at))
                    .where(self._one_of(table.c.model, models, Text()))
                    .group_by(table.c.model)
                )
                for name, at in (await conn.execute(newest)).all():
                    at = as_utc(at)
                    if name not in found or at > found[name]:
                        found[name] = at
        return found

    async def latencies(
        self,
        *,
        model: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100_000,
        arm: tuple[str, str] | None = None,
    ) -> list[float]:
        found: list[tuple[datetime, float]] = []
        async with self.database.engine.connect() as conn:
            for table in (SINGLES, BLOCKS):
                query = (
                    select(table.c.created_at, table.c.latency_ms)
                    .where(*_window(table, model, None, start, end, arm))
                    .order_by(table.c.created_at.desc())
                    .limit(limit)
                )
                found += [(row.created_at, row.latency_ms) for row in await conn.execute(query)]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [latency for _, latency in found[:limit]]

    async def sample_inputs(
        self,
        *,
        model: str,
        version: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        n: int,
        seed: int | None = None,
    ) -> list[list[Any]]:
        """Positions among the matching predictions (singles by id, then blocks' members by id) are drawn
        here; SQL maps them to rows with window functions over the rows' ids and sizes, and only the
        chosen rows' inputs are read."""
        singles_where = _window(SINGLES, model, version, start, end)
        blocks_where = _window(BLOCKS, model, version, start, end)
        async with self.database.engine.connect() as conn:
            n_singles = int(
                await conn.scalar(select(func.count()).select_from(SINGLES).where(*singles_where)) or 0
            )
            n_blocks = int(
                await conn.scalar(select(func.coalesce(func.sum(BLOCKS.c.count), 0)).where(*blocks_where))
                or 0
            )
            total = n_singles + n_blocks
            positions = sorted(random.Random(seed).sample(range(total), min(max(n, 0), total)))
            chosen: list[tuple[str, list[Any]]] = []
            in_singles = [p for p in positions if p < n_singles]
            if in_singles:
                rank = (func.row_number().over(order_by=SINGLES.c.id) - 1).label("rank")
                ranked = select(SINGLES.c.id, rank).where(*singles_where).subquery()
                ids = select(ranked.c.id).where(self._one_of(ranked.c.rank, in_singles, BigInteger()))
                rows = await conn.execute(select(SINGLES.c.id, SINGLES.c.inputs).where(SINGLES.c.id.in_(ids)))
                chosen += [(row.id, row.inputs) for row in rows]
            in_blocks = [p - n_singles for p in positions if p >= n_singles]
            if in_blocks:
                before = (func.sum(BLOCKS.c.count).over(order_by=BLOCKS.c.id) - BLOCKS.c.count).label(
                    "before"
                )
                ranked = select(BLOCKS.c.id, BLOCKS.c.count, before).where(*blocks_where).subquery()
                wanted = self._values(in_blocks, BigInteger())
                hits = await conn.execute(
                    select(ranked.c.id, wanted.c.value - ranked.c.before).join(
                        wanted,
                        and_(
                            wanted.c.value >= ranked.c.before,
                            wanted.c.value < ranked.c.before + ranked.c.count,
                        ),
                    )
                )
                members: dict[str, list[int]] = {}
                for block_id, position in hits:
                    members.setdefault(block_id, []).append(int(position))
                columns = (BLOCKS.c.id, SIZE, BLOCKS.c.inputs, BLOCKS.c.inputs_f64)
                for row in await conn.execute(
                    select(*columns).where(self._one_of(BLOCKS.c.id, list(members)))
                ):
                    inputs = inputs_of(row.inputs_f64, row.inputs, row.size)
                    member_ids = block_ids(row.id, row.size)
                    chosen += [(member_ids[p], inputs[p]) for p in members[row.id]]
        chosen.sort(key=lambda item: item[0])
        return [inputs for _, inputs in chosen]

    async def resolve(self, prediction_ids: Sequence[str]) -> dict[str, PredictionRef]:
        wanted = [id_ for id_ in dict.fromkeys(prediction_ids) if _ID.fullmatch(id_)]
        found: dict[str, PredictionRef] = {}
        if not wanted:
            return found
        columns = (
            SINGLES.c.id,
            SINGLES.c.model,
            SINGLES.c.version,
            SINGLES.c.request_id,
            SINGLES.c.created_at,
        )
        async with self.database.engine.connect() as conn:
            for row in await conn.execute(select(*columns).where(self._one_of(SINGLES.c.id, wanted))):
                found[row.id] = ref_of(row, row.id, 0, batched=False)
            rest = [id_ for id_ in wanted if id_ not in found]
            if not rest:
                return found
            # A block's ids share its first id's 22-character prefix: find blocks by prefix range.
            prefixes = self._values(sorted({id_[:22] for id_ in rest}))
            within = and_(
                BLOCKS.c.id >= prefixes.c.value.concat("0000"), BLOCKS.c.id <= prefixes.c.value.concat("ffff")
            )
            block_columns = (*(BLOCKS.c[c.name] for c in columns), SIZE)
            # prefix → (first position, size, row, its time): the time converted once per block, not per id
            blocks: dict[str, list[tuple[int, int, Any, datetime]]] = {}
            for row in await conn.execute(select(*block_columns).join(prefixes, within)):
                blocks.setdefault(row.id[:22], []).append(
                    (int(row.id[22:26], 16), row.size, row, as_utc(row.created_at))
                )
        for id_ in rest:
            for first, size, row, created_at in blocks.get(id_[:22], ()):
                position = int(id_[22:], 16) - first
                if 0 <= position < size:
                    found[id_] = PredictionRef(
                        id_, row.id, position, True, row.model, row.version, row.request_id, created_at
                    )
        return found

    async def resolve_requests(self, request_ids: Sequence[str]) -> dict[str, list[PredictionRef]]:
        wanted = list(dict.fromkeys(request_ids))
        found: dict[str, list[PredictionRef]] = {}
        if not wanted:
            return found
        async with self.database.engine.connect() as conn:
            for table in (SINGLES, BLOCKS):
                first = func.row_number().over(partition_by=table.c.request_id, order_by=table.c.id)
                size = table.c.count if table is BLOCKS else literal(1)
                ranked = (
                    select(
                        table.c.id,
                        table.c.model,
                        table.c.version,
                        table.c.request_id,
                        table.c.created_at,
                        size.label("size"),
                        first.label("first"),
                    )
                    .where(table.c.request_id.is_not(None), self._one_of(table.c.request_id, wanted))
                    .subquery()
                )
                for row in await conn.execute(select(ranked).where(ranked.c.first <= 2)):
                    refs = found.setdefault(row.request_id, [])
                    for position, id_ in enumerate(block_ids(row.id, min(row.size, 2))):
                        refs.append(ref_of(row, id_, position, batched=table is BLOCKS))
        return {request_id: refs[:2] for request_id, refs in found.items()}

    # --- feedback --------------------------------------------------------------------------------------

    async def add_feedback(
        self, entries: Sequence[FeedbackEntry], *, received_at: datetime, actor: str | None
    ) -> list[str]:
        if not entries:
            return []
        at = stored_time(received_at)
        last = {entry.prediction.prediction_id: index for index, entry in enumerate(entries)}
        earlier = [
            e.prediction.prediction_id for i, e in enumerate(entries) if last[e.prediction.prediction_id] != i
        ]
        row_ids = new_ids(len(entries))
        current = [last[entry.prediction.prediction_id] == index for index, entry in enumerate(entries)]
        rows: str | list[dict[str, Any]]
        if self.postgres:
            rows = copy_text(row_ids, entries, current, at, actor)
        else:
            rows = [
                dict(zip(FEEDBACK_COLUMNS, feedback_row(row_id, entry, at, actor, current=now), strict=True))
                for row_id, entry, now in zip(row_ids, entries, current, strict=True)
            ]
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self.database.engine.begin() as conn:
                    replaced = await conn.execute(
                        update(FEEDBACK)
                        .where(
                            self._one_of(FEEDBACK.c.prediction_id, list(last)),
                            FEEDBACK.c.superseded_at.is_(None),
                        )
                        .values(superseded_at=at)
                        .returning(FEEDBACK.c.prediction_id)
                    )
                    superseded = list(replaced.scalars())
                    await self._insert_feedback(conn, rows)
                return superseded + earlier
            except (IntegrityError, psycopg.errors.UniqueViolation):
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise AssertionError("unreachable")

    async def _insert_feedback(self, conn: AsyncConnection, rows: str | list[dict[str, Any]]) -> None:
        if isinstance(rows, list):
            await conn.execute(insert(FEEDBACK), rows)
            return
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        async with driver.cursor() as cursor:
            statement = f"COPY feedback ({', '.join(FEEDBACK_COLUMNS)}) FROM STDIN"
            async with cursor.copy(statement) as copy:
                await copy.write(rows)

    async def feedback_history(self, prediction_id: str) -> list[FeedbackHistoryEntry]:
        query = (
            select(FEEDBACK)
            .where(FEEDBACK.c.prediction_id == prediction_id)
            .order_by(FEEDBACK.c.superseded_at.is_(None), FEEDBACK.c.superseded_at, FEEDBACK.c.id)
        )
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            FeedbackHistoryEntry(
                actual=row["actual"],
                observed_at=as_utc(row["observed_at"]),
                received_at=as_utc(row["received_at"]),
                actor=row["actor"],
                superseded_at=None if row["superseded_at"] is None else as_utc(row["superseded_at"]),
            )
            for row in rows
        ]

    async def current_feedback(self, prediction_ids: Sequence[str]) -> dict[str, FeedbackHistoryEntry]:
        wanted = [id_ for id_ in dict.fromkeys(prediction_ids) if _ID.fullmatch(id_)]
        if not wanted:
            return {}
        query = select(FEEDBACK).where(
            self._one_of(FEEDBACK.c.prediction_id, wanted), FEEDBACK.c.superseded_at.is_(None)
        )
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {
            row["prediction_id"]: FeedbackHistoryEntry(
                actual=row["actual"],
                observed_at=as_utc(row["observed_at"]),
                received_at=as_utc(row["received_at"]),
                actor=row["actor"],
                superseded_at=None,
            )
            for row in rows
        }

    async def labelled(
        self,
        *,
        model: str,
        version: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1_000_000,
        probabilities: bool = True,
    ) -> LabelledPredictions:
        conditions = [FEEDBACK.c.model == model, FEEDBACK.c.superseded_at.is_(None)]
        if version is not None:
            conditions.append(FEEDBACK.c.version == version)
        if start is not None:
            conditions.append(FEEDBACK.c.predicted_at >= stored_time(start))
        if end is not None:
            conditions.append(FEEDBACK.c.predicted_at < stored_time(end))
        labels = (
            select(
                FEEDBACK.c.prediction_id,
                FEEDBACK.c.block_id,
                FEEDBACK.c.position,
                FEEDBACK.c.batched,
                FEEDBACK.c.version,
                FEEDBACK.c.actual,
                FEEDBACK.c.predicted_at,
            )
            .where(*conditions)
            .order_by(FEEDBACK.c.predicted_at.desc(), FEEDBACK.c.prediction_id)
            .limit(limit)
        )
        async with self.database.engine.connect() as conn:
            found = (await conn.execute(labels)).all()
            single_ids = sorted({row.block_id for row in found if not row.batched})
            block_ids_ = sorted({row.block_id for row in found if row.batched})
            singles: dict[str, tuple[Any, dict[str, float] | None]] = {}
            if single_ids:
                probs = SINGLES.c.probabilities if probabilities else null().label("probabilities")
                query = select(SINGLES.c.id, SINGLES.c.prediction, probs)
                for single in await conn.execute(query.where(self._one_of(SINGLES.c.id, single_ids))):
                    singles[single.id] = (single.prediction, single.probabilities)
            blocks: dict[str, tuple[list[Any], list[str] | None, list[list[float]] | list[None]]] = {}
            if block_ids_:
                columns = [BLOCKS.c.id, SIZE, BLOCKS.c.predictions, BLOCKS.c.classes]
                if probabilities:
                    columns += [BLOCKS.c.probabilities, BLOCKS.c.probabilities_f64]
                for row in await conn.execute(select(*columns).where(self._one_of(BLOCKS.c.id, block_ids_))):
                    rows = (
                        probabilities_of(row.probabilities_f64, row.probabilities, row.size)
                        if probabilities
                        else [None] * row.size
                    )
                    blocks[row.id] = (row.predictions, row.classes, rows)
        return labelled(found, singles, blocks)
