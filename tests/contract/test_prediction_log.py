"""The prediction log on every database: single rows and blocks written by the writer, read as predictions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.ids import block_ids, new_block, new_id
from mlplatform.serving.logs import BatchRecord, PredictionLogWriter, PredictionRecord
from mlplatform.settings import DatabaseSettings


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[db.Database]:
    settings = DatabaseSettings(url=database_url)
    db.upgrade(settings)
    database = db.Database(settings)
    yield database
    await database.dispose()


def single(model: str, at_offset: float) -> PredictionRecord:
    return PredictionRecord(
        id=new_id(),
        model=model,
        version=f"{model}-v1-20261201000000",
        variant=None,
        request_id="one",
        inputs=[1.5, "red"],
        prediction="cat",
        probabilities={"cat": 0.75, "dog": 0.25},
        confidence=0.75,
        latency_ms=0.4,
        cached=True,
        created_at=utcnow() + timedelta(seconds=at_offset),
    )


def block(model: str, rows: int, at_offset: float) -> BatchRecord:
    probabilities = np.linspace(0.1, 0.9, rows, dtype=np.float32)
    return BatchRecord(
        first_id=new_block(),
        model=model,
        version=f"{model}-v1-20261201000000",
        variant="b",
        request_id="many",
        inputs=np.arange(rows * 3, dtype=np.float64).reshape(rows, 3),
        predictions=np.where(probabilities > 0.5, "dog", "cat"),  # a unicode array, as string labels are
        classes=["cat", "dog"],
        probabilities=np.column_stack([1 - probabilities, probabilities]),
        latency_ms=3.5,
        created_at=utcnow() + timedelta(seconds=at_offset),
    )


async def test_singles_and_blocks_are_written_and_read_back_as_predictions(database: db.Database) -> None:
    writer = PredictionLogWriter(database, CollectorRegistry(), interval=0.01)
    writer.start()
    older, newer = block("m", 4, at_offset=-2), block("m", 3, at_offset=-1)
    records = [single("m", at_offset=0), older, newer, single("other", at_offset=0)]
    for record in records:
        assert writer.submit(record)
    await writer.stop()
    assert writer.depth == 0 and writer.written._value.get() == 9

    found = await writer.query(model="m", start=None, end=None, limit=100)
    assert len(found) == 8
    assert [entry.prediction_id for entry in found[1:]] == block_ids(newer.first_id, 3) + block_ids(
        older.first_id, 4
    )
    first = found[0]
    assert (first.prediction, first.probabilities, first.cached) == ("cat", {"cat": 0.75, "dog": 0.25}, True)
    assert first.inputs == [1.5, "red"]
    entry = found[1]
    assert entry.inputs == [0.0, 1.0, 2.0] and entry.prediction == "cat" and entry.variant == "b"
    assert entry.probabilities == pytest.approx({"cat": 0.9, "dog": 0.1})
    assert entry.confidence == pytest.approx(0.9) and entry.cached is False
    assert found[-1].inputs == [9.0, 10.0, 11.0] and found[-1].prediction == "dog"


async def written(database: db.Database, *records: BatchRecord) -> PredictionLogWriter:
    """A writer that has written `records` and stopped."""
    writer = PredictionLogWriter(database, CollectorRegistry(), interval=0.01)
    writer.start()
    for record in records:
        assert writer.submit(record)
    await writer.stop()
    return writer


def stored(database_url: str, first_id: str) -> dict[str, object]:
    """A block's row as stored, bypassing the ORM."""
    engine = create_engine(db.sync_url(DatabaseSettings(url=database_url)))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT inputs, inputs_f64, probabilities, probabilities_f64 "
                    "FROM prediction_batches WHERE id = :id"
                ),
                {"id": first_id},
            ).one()
    finally:
        engine.dispose()
    return dict(row._mapping)


async def test_numeric_blocks_are_stored_as_float64_and_read_back_exactly(
    database: db.Database, database_url: str
) -> None:
    inputs = np.array([[0.1, -2.5e-308, 1e300], [np.pi, 7.0, -0.0], [1 / 3, 2**53 + 1, 42.0]])
    record = dataclasses.replace(block("m", 3, at_offset=0), inputs=inputs)
    writer = await written(database, record)

    row = stored(database_url, record.first_id)
    assert row["inputs"] is None and row["probabilities"] is None
    assert bytes(row["inputs_f64"]) == inputs.astype("<f8").tobytes()  # 9 values, 8 bytes each, row-major
    assert len(bytes(row["probabilities_f64"])) == 3 * 2 * 8
    found = await writer.query(model="m", start=None, end=None, limit=10)
    assert [entry.inputs for entry in found] == inputs.tolist()  # the same doubles, bit for bit
    expected = record.probabilities.astype(np.float64)
    assert [list(entry.probabilities.values()) for entry in found] == expected.tolist()


async def test_blocks_with_string_features_keep_their_inputs_as_json(
    database: db.Database, database_url: str
) -> None:
    inputs = np.array([[1.5, "red"], [2.0, "blue"]], dtype=object)
    record = dataclasses.replace(block("m", 2, at_offset=0), inputs=inputs)
    writer = await written(database, record)

    row = stored(database_url, record.first_id)
    assert row["inputs_f64"] is None and row["inputs"] is not None
    found = await writer.query(model="m", start=None, end=None, limit=10)
    assert [entry.inputs for entry in found] == [[1.5, "red"], [2.0, "blue"]]


async def test_the_limit_counts_predictions_inside_blocks(database: db.Database) -> None:
    blocks = [block("m", 5, at_offset=-offset) for offset in range(4)]
    writer = await written(database, *blocks)
    newest = await writer.query(model="m", start=None, end=None, limit=7)
    assert [entry.prediction_id for entry in newest] == block_ids(blocks[0].first_id, 5) + block_ids(
        blocks[1].first_id, 2
    )
    window = await writer.query(model="m", start=blocks[2].created_at, end=blocks[0].created_at, limit=100)
    assert len(window) == 10  # blocks 2 and 1: `from` inclusive, `to` exclusive


async def test_a_full_queue_drops_and_counts_whole_blocks(database: db.Database) -> None:
    writer = PredictionLogWriter(database, CollectorRegistry(), queue_size=6)
    assert writer.submit(block("m", 4, at_offset=0))
    assert not writer.submit(block("m", 3, at_offset=0))
    assert writer.submit(single("m", at_offset=0))
    assert writer.dropped._value.get() == 3 and writer.depth == 5
    assert not writer.accepting(2) and writer.dropped._value.get() == 5


async def test_downgrading_below_0007_turns_float64_blocks_back_into_json(
    database: db.Database, database_url: str
) -> None:
    record = block("m", 2, at_offset=0)
    await written(database, record)
    await database.dispose()

    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.downgrade, settings, "0006")
    engine = create_engine(db.sync_url(settings))
    try:
        with engine.connect() as conn:
            inputs, probabilities = conn.execute(
                text("SELECT inputs, probabilities FROM prediction_batches WHERE id = :id"),
                {"id": record.first_id},
            ).one()
    finally:
        engine.dispose()
    decode = (lambda v: v) if isinstance(inputs, list) else json.loads  # PostgreSQL's driver parses JSON
    assert decode(inputs) == record.inputs.tolist()
    assert decode(probabilities) == record.probabilities.astype(np.float64).tolist()
    await asyncio.to_thread(db.upgrade, settings)
