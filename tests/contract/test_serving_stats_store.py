"""The serving stats store on every database backend: each instance's minutes replaced, added up on reading,
windows, instances and pruning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from mlplatform import db
from mlplatform.serving.stats_store import Counts, SqlServingStatsStore
from mlplatform.serving.tables import STAT_BUCKETS
from mlplatform.settings import DatabaseSettings

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlServingStatsStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlServingStatsStore(database)
    await database.dispose()


def counts(predictions: int, errors: int = 0, *cells: tuple[int, int]) -> Counts:
    buckets = [0] * STAT_BUCKETS
    for cell, n in cells:
        buckets[cell] += n
    return Counts(predictions, errors, float(predictions) * 1.5, tuple(buckets))


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


async def test_each_instance_replaces_its_own_minutes_and_reads_add_every_instance(
    store: SqlServingStatsStore,
) -> None:
    at = minute(10)
    await store.save("a", {("churn", minute(0)): counts(3, 0, (4, 3))}, at=at)
    await store.save("a", {("churn", minute(0)): counts(5, 1, (4, 5))}, at=at)  # the minute went on
    await store.save(
        "b",
        {
            ("churn", minute(0)): counts(2, 0, (16, 2)),
            ("churn", minute(1)): counts(7, 2, (0, 7)),
            ("fraud", minute(1)): counts(100, 0, (1, 100)),
        },
        at=at,
    )
    await store.save("b", {}, at=at)  # nothing to save: nothing written
    found = await store.per_minute("churn", minute(0), minute(5))
    assert found == {minute(0): counts(5, 1, (4, 5)) + counts(2, 0, (16, 2)), minute(1): counts(7, 2, (0, 7))}
    assert found[minute(0)].requests == 7 and found[minute(0)].latency_sum_ms == 10.5
    assert all(m.tzinfo is not None for m in found)
    assert await store.per_minute("churn", minute(1), minute(2)) == {minute(1): counts(7, 2, (0, 7))}
    assert await store.per_minute("nobody", minute(0), minute(5)) == {}
    assert await store.by_model(minute(0), minute(5)) == {
        "churn": counts(5, 1, (4, 5)) + counts(2, 0, (16, 2)) + counts(7, 2, (0, 7)),
        "fraud": counts(100, 0, (1, 100)),
    }
    assert await store.by_model(minute(1), minute(2)) == {
        "churn": counts(7, 2, (0, 7)),
        "fraud": counts(100, 0, (1, 100)),
    }
    assert await store.instances("churn", minute(0), minute(5)) == {"a", "b"}
    assert await store.instances("churn", minute(1), minute(5)) == {"b"}
    assert await store.instances("fraud", minute(2), minute(5)) == set()


async def test_pruning_deletes_the_minutes_before_the_cut(store: SqlServingStatsStore) -> None:
    await store.save("a", {("m", minute(n)): counts(1, 0, (3, 1)) for n in range(5)}, at=minute(5))
    assert await store.prune(minute(3)) == 3
    assert sorted(await store.per_minute("m", minute(0), minute(10))) == [minute(3), minute(4)]
    assert await store.prune(minute(3)) == 0


async def test_large_counts_and_many_models_round_trip(store: SqlServingStatsStore) -> None:
    big = Counts(2**40, 2**33, 1e12, tuple(2**35 + i for i in range(STAT_BUCKETS)))
    await store.save("a", {(f"m{i}", minute(0)): big for i in range(200)}, at=minute(1))
    found = await store.by_model(minute(0), minute(1))
    assert len(found) == 200 and found["m7"] == big
