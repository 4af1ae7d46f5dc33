"""The prediction log store on every database: singles and blocks written by the writer and read back as
predictions; ids resolved, feedback stored with its history, and joined to predictions for metrics."""

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
from mlplatform.stores.predictions import FeedbackEntry, PredictionLogStore, create_prediction_log_store


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[db.Database]:
    settings = DatabaseSettings(url=database_url)
    db.upgrade(settings)
    database = db.Database(settings)
    yield database
    await database.dispose()


@pytest.fixture
def store(database: db.Database) -> PredictionLogStore:
    return create_prediction_log_store(database)


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
    writer = PredictionLogWriter(create_prediction_log_store(database), CollectorRegistry(), interval=0.01)
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
    writer = PredictionLogWriter(create_prediction_log_store(database), CollectorRegistry(), interval=0.01)
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
    writer = PredictionLogWriter(create_prediction_log_store(database), CollectorRegistry(), queue_size=6)
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


# --- the store's reads: filters, counts, samples, id resolution ---------------------------------------------


def appended(store: PredictionLogStore, *records: PredictionRecord | BatchRecord) -> None:
    store.append(records)
    store.close_appender()


async def test_query_filters_by_version_and_request_id(store: PredictionLogStore) -> None:
    one, many = single("m", at_offset=0), block("m", 3, at_offset=-1)
    other = dataclasses.replace(single("m", at_offset=-2), version="m-v2-20261202000000", request_id="x")
    appended(store, one, many, other)
    assert {e.prediction_id for e in await store.query(model="m", version="m-v2-20261202000000")} == {
        other.id
    }
    assert [e.prediction_id for e in await store.query(request_id="many")] == block_ids(many.first_id, 3)
    assert [e.prediction_id for e in await store.query(model="m", request_id="one")] == [one.id]
    assert len(await store.query(model="m", limit=2)) == 2


async def test_count_counts_every_member_of_a_block_in_the_window(store: PredictionLogStore) -> None:
    records = [single("m", at_offset=-10), block("m", 5, at_offset=-5), block("m", 2, at_offset=0)]
    appended(store, *records, single("other", at_offset=0))
    assert await store.count(model="m") == 8
    assert await store.count(model="m", start=records[1].created_at) == 7
    assert await store.count(model="m", start=records[1].created_at, end=records[2].created_at) == 5
    assert await store.count(model="m", version="nope") == 0


async def test_counts_per_bucket_match_count_of_each_bucket(store: PredictionLogStore) -> None:
    records = [
        single("m", at_offset=-10),
        block("m", 5, at_offset=-5),
        single("m", at_offset=-4),
        block("m", 2, at_offset=0),
    ]
    appended(store, *records, single("other", at_offset=-5))
    at = [r.created_at for r in records]
    edges = [
        at[0] - timedelta(seconds=30),
        at[0],
        at[1],
        at[2] + timedelta(seconds=1),
        at[3] + timedelta(seconds=1),
    ]
    found = await store.counts(model="m", edges=edges)
    assert found == [0, 1, 6, 2]
    assert found == [
        await store.count(model="m", start=a, end=b) for a, b in zip(edges, edges[1:], strict=False)
    ]
    assert await store.counts(model="m", version="nope", edges=edges) == [0, 0, 0, 0]
    assert await store.counts(model="m", edges=edges[:1]) == []


async def test_latencies_are_one_per_request_newest_first_in_the_window(store: PredictionLogStore) -> None:
    records = [
        dataclasses.replace(single("m", at_offset=-10), latency_ms=1.0),
        dataclasses.replace(block("m", 5, at_offset=-5), latency_ms=50.0),
        dataclasses.replace(single("m", at_offset=0), latency_ms=2.0),
    ]
    appended(store, *records, single("other", at_offset=0))
    assert await store.latencies(model="m") == [2.0, 50.0, 1.0]  # a block of 5 is one request
    assert await store.latencies(model="m", start=records[1].created_at) == [2.0, 50.0]
    assert await store.latencies(model="m", end=records[1].created_at) == [1.0]
    assert await store.latencies(model="m", limit=2) == [2.0, 50.0]
    assert await store.latencies(model="nope") == []


async def test_last_predictions_are_the_newest_single_or_block_per_model(store: PredictionLogStore) -> None:
    newest_block, newest_single = block("b", 3, at_offset=-1), single("s", at_offset=-1)
    records = [single("b", at_offset=-20), newest_block, newest_single, block("s", 2, at_offset=-30)]
    appended(store, *records, single("other", at_offset=0))
    last = await store.last_predictions(["b", "s", "never"])
    assert last == {"b": newest_block.created_at, "s": newest_single.created_at}
    assert all(at.tzinfo is not None for at in last.values())
    assert await store.last_predictions([]) == {}


async def test_samples_are_uniform_bounded_and_repeatable(store: PredictionLogStore) -> None:
    singles = [dataclasses.replace(single("m", at_offset=-1), inputs=[float(i), -1.0]) for i in range(20)]
    blocks = []
    for b in range(3):
        record = block("m", 10, at_offset=-1)
        blocks.append(
            dataclasses.replace(record, inputs=np.column_stack([np.arange(10) + 100 * (b + 1)] * 2))
        )
    appended(store, *singles, *blocks)
    everything = await store.sample_inputs(model="m", n=1000)
    assert len(everything) == 50 and len({tuple(row) for row in everything}) == 50
    sample = await store.sample_inputs(model="m", n=12, seed=7)
    assert len(sample) == 12 and len({tuple(row) for row in sample}) == 12
    assert sample == await store.sample_inputs(model="m", n=12, seed=7)
    assert {tuple(row) for row in sample} <= {tuple(row) for row in everything}
    assert await store.sample_inputs(model="m", version="nope", n=5) == []
    # Every prediction as likely: over many draws, block members and singles come up in proportion.
    from_blocks = 0
    for seed in range(40):
        from_blocks += sum(row[0] >= 100 for row in await store.sample_inputs(model="m", n=5, seed=seed))
    assert 0.45 < from_blocks / 200 < 0.75  # 30 of 50 predictions are in blocks


async def test_ids_resolve_to_singles_and_to_members_of_blocks(store: PredictionLogStore) -> None:
    one, many = single("m", at_offset=0), block("m", 4, at_offset=0)
    appended(store, one, many)
    members = block_ids(many.first_id, 4)
    beyond = block_ids(many.first_id, 5)[4]  # the next id of the block's prefix: never logged
    found = await store.resolve([one.id, members[2], members[0], beyond, "not-an-id", new_id()])
    assert set(found) == {one.id, members[2], members[0]}
    assert (found[one.id].block_id, found[one.id].position, found[one.id].batched) == (one.id, 0, False)
    member = found[members[2]]
    assert (member.block_id, member.position, member.batched) == (many.first_id, 2, True)
    assert (member.model, member.version, member.request_id) == ("m", many.version, "many")
    assert member.created_at == many.created_at
    assert await store.resolve([]) == {}


async def test_request_ids_resolve_to_at_most_two_predictions(store: PredictionLogStore) -> None:
    alone = dataclasses.replace(single("m", at_offset=0), request_id="alone")
    twice = [dataclasses.replace(single("m", at_offset=0), request_id="twice") for _ in range(3)]
    appended(
        store,
        alone,
        *twice,
        block("m", 4, at_offset=0),
        dataclasses.replace(block("m", 1, 0), request_id="b1"),
    )
    found = await store.resolve_requests(["alone", "twice", "many", "b1", "unknown"])
    assert set(found) == {"alone", "twice", "many", "b1"}
    assert [ref.prediction_id for ref in found["alone"]] == [alone.id]
    assert len(found["twice"]) == 2 and len(found["many"]) == 2
    assert len(found["b1"]) == 1 and found["b1"][0].batched


# --- feedback ------------------------------------------------------------------------------------------


async def feedback(store: PredictionLogStore, actuals: dict[str, object], *, actor: str = "a") -> list[str]:
    refs = await store.resolve(list(actuals))
    entries = [
        FeedbackEntry(prediction=refs[id_], actual=value, observed_at=utcnow())
        for id_, value in actuals.items()
    ]
    return await store.add_feedback(entries, received_at=utcnow(), actor=actor)


async def test_feedback_last_wins_and_keeps_its_history(store: PredictionLogStore) -> None:
    one, many = single("m", at_offset=0), block("m", 3, at_offset=0)
    appended(store, one, many)
    members = block_ids(many.first_id, 3)
    assert await feedback(store, {one.id: "cat", members[1]: "dog"}) == []
    assert await feedback(store, {one.id: "dog"}, actor="b") == [one.id]
    history = await store.feedback_history(one.id)
    assert [(h.actual, h.actor, h.superseded_at is None) for h in history] == [
        ("cat", "a", False),
        ("dog", "b", True),
    ]
    # The same prediction twice in one call: the later wins, the earlier is kept as replaced.
    refs = await store.resolve([members[0]])
    entries = [FeedbackEntry(refs[members[0]], value, utcnow()) for value in ("cat", "dog")]
    assert await store.add_feedback(entries, received_at=utcnow(), actor=None) == [members[0]]
    assert [h.actual for h in await store.feedback_history(members[0])] == ["cat", "dog"]
    assert await store.feedback_history(new_id()) == []


async def test_feedback_values_and_actors_with_tabs_newlines_and_backslashes_are_stored_as_given(
    store: PredictionLogStore,
) -> None:
    """PostgreSQL writes feedback as COPY text: its separators and escapes must survive in every field."""
    one, many = single("m", at_offset=0), block("m", 3, at_offset=0)
    appended(store, one, many)
    members = block_ids(many.first_id, 3)
    awkward = {one.id: "a\tb\nc\\N", members[0]: "\\", members[1]: 'say "hi"\r\n', members[2]: 2.5}
    actor = "team\tA\\ops\n(key 1)"
    assert await feedback(store, awkward, actor=actor) == []
    for prediction_id, value in awkward.items():
        [entry] = await store.feedback_history(prediction_id)
        assert (entry.actual, entry.actor, entry.superseded_at) == (value, actor, None)


async def test_concurrent_feedback_for_one_prediction_leaves_one_current_value(
    store: PredictionLogStore,
) -> None:
    one = single("m", at_offset=0)
    appended(store, one)
    await asyncio.gather(*(feedback(store, {one.id: label}) for label in ["cat", "dog"] * 4))
    history = await store.feedback_history(one.id)
    assert len(history) == 8 and [h.superseded_at is None for h in history].count(True) == 1
    labelled = await store.labelled(model="m")
    assert len(labelled) == 1 and labelled.actual == [history[-1].actual]


async def test_labelled_joins_current_feedback_to_predictions_as_arrays(store: PredictionLogStore) -> None:
    old = single("m", at_offset=-3600)
    one, many = single("m", at_offset=0), block("m", 4, at_offset=0)
    v2 = dataclasses.replace(single("m", at_offset=0), version="m-v2-20261202000000", probabilities=None)
    appended(store, old, one, many, v2, single("other", at_offset=0))
    members = block_ids(many.first_id, 4)
    await feedback(store, {old.id: "cat", one.id: "dog", members[0]: "cat", members[3]: "cat", v2.id: "dog"})
    await feedback(store, {members[3]: "dog"})  # replaced: only the current value counts

    window = await store.labelled(model="m", start=one.created_at - timedelta(seconds=1))
    by_id = dict(zip(window.prediction_ids, range(len(window)), strict=True))
    assert set(by_id) == {one.id, members[0], members[3], v2.id}
    assert window.classes == ["cat", "dog"] or window.classes == ["dog", "cat"]
    assert window.probabilities is not None
    cat = window.classes.index("cat")
    assert window.actual[by_id[members[3]]] == "dog" and window.predicted[by_id[members[3]]] == "dog"
    assert window.probabilities[by_id[members[0]], cat] == pytest.approx(0.9)
    assert window.probabilities[by_id[one.id], cat] == 0.75
    assert np.isnan(window.probabilities[by_id[v2.id]]).all()
    assert window.versions[by_id[v2.id]] == "m-v2-20261202000000"
    assert window.predicted_at[by_id[one.id]] == one.created_at  # aware UTC, as logged
    assert window.predicted_at[by_id[members[3]]] == many.created_at
    labels_only = await store.labelled(
        model="m", start=one.created_at - timedelta(seconds=1), probabilities=False
    )
    assert labels_only.probabilities is None and labels_only.classes == []
    assert (labels_only.prediction_ids, labels_only.predicted, labels_only.actual) == (
        window.prediction_ids,
        window.predicted,
        window.actual,
    )
    only_v2 = await store.labelled(model="m", version="m-v2-20261202000000")
    assert only_v2.prediction_ids == [v2.id] and only_v2.probabilities is None
    assert len(await store.labelled(model="m")) == 5
    assert len(await store.labelled(model="other")) == 0


async def test_current_feedback_is_the_latest_value_of_each_prediction_that_has_one(
    store: PredictionLogStore,
) -> None:
    one, other, many = single("m", at_offset=0), single("m", at_offset=1), block("m", 3, at_offset=0)
    appended(store, one, other, many)
    members = block_ids(many.first_id, 3)
    await feedback(store, {one.id: "cat", members[2]: "dog"})
    await feedback(store, {one.id: "dog"}, actor="b")
    found = await store.current_feedback([one.id, other.id, members[2], new_id(), "not-an-id", one.id])
    assert set(found) == {one.id, members[2]}
    assert (found[one.id].actual, found[one.id].actor, found[one.id].superseded_at) == ("dog", "b", None)
    assert found[members[2]].actual == "dog" and found[members[2]].received_at.tzinfo is not None
    assert await store.current_feedback([]) == {}
