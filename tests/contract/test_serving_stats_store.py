"""The serving stats store on every database backend: each instance's minutes and hours replaced, added up
on reading, windows, instances and pruning."""

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
    await store.save("a", {("churn", minute(0)): counts(3, 0, (4, 3))}, {}, at=at)
    await store.save("a", {("churn", minute(0)): counts(5, 1, (4, 5))}, {}, at=at)  # the minute went on
    await store.save(
        "b",
        {
            ("churn", minute(0)): counts(2, 0, (16, 2)),
            ("churn", minute(1)): counts(7, 2, (0, 7)),
            ("fraud", minute(1)): counts(100, 0, (1, 100)),
        },
        {},
        at=at,
    )
    await store.save("b", {}, {}, at=at)  # nothing to save: nothing written
    found = await store.periods("churn", minute(0), minute(5))
    assert found == {minute(0): counts(5, 1, (4, 5)) + counts(2, 0, (16, 2)), minute(1): counts(7, 2, (0, 7))}
    assert found[minute(0)].requests == 7 and found[minute(0)].latency_sum_ms == 10.5
    assert all(m.tzinfo is not None for m in found)
    assert await store.periods("churn", minute(1), minute(2)) == {minute(1): counts(7, 2, (0, 7))}
    assert await store.periods("nobody", minute(0), minute(5)) == {}
    assert await store.periods("churn", minute(0), minute(5), hourly=True) == {}  # no hour row was saved
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


async def test_hours_are_kept_apart_from_minutes(store: SqlServingStatsStore) -> None:
    hour = T0 + timedelta(hours=1)
    minutes = {("m", minute(n)): counts(1, 0, (3, 1)) for n in range(3)}
    hours = {("m", T0): counts(3, 0, (3, 3)), ("m", hour): counts(4, 1, (2, 4)), ("n", T0): counts(9)}
    await store.save("a", minutes, hours, at=minute(3))
    await store.save("b", {}, {("m", hour): counts(1)}, at=minute(3))
    assert await store.periods("m", T0, hour + timedelta(hours=1), hourly=True) == {
        T0: counts(3, 0, (3, 3)),
        hour: counts(4, 1, (2, 4)) + counts(1),
    }
    assert await store.by_model(T0, hour, hourly=True) == {"m": counts(3, 0, (3, 3)), "n": counts(9)}
    assert await store.instances("m", hour, hour + timedelta(hours=1), hourly=True) == {"a", "b"}
    assert await store.by_model(T0, minute(60)) == {"m": counts(3, 0, (3, 3))}  # the minutes alone


async def test_pruning_deletes_the_minutes_and_hours_before_the_cut(store: SqlServingStatsStore) -> None:
    minutes = {("m", minute(n)): counts(1, 0, (3, 1)) for n in range(5)}
    hours = {("m", T0 - timedelta(hours=1)): counts(2), ("m", T0): counts(5)}
    await store.save("a", minutes, hours, at=minute(5))
    assert await store.prune(minute(3)) == 4  # three minutes, one hour
    assert sorted(await store.periods("m", minute(0), minute(10))) == [minute(3), minute(4)]
    assert list(await store.periods("m", T0 - timedelta(hours=2), minute(10), hourly=True)) == [T0]
    assert await store.prune(minute(3)) == 0


async def test_large_counts_and_many_models_round_trip(store: SqlServingStatsStore) -> None:
    big = Counts(2**40, 2**33, 1e12, tuple(2**35 + i for i in range(STAT_BUCKETS)))
    await store.save("a", {(f"m{i}", minute(0)): big for i in range(200)}, {}, at=minute(1))
    found = await store.by_model(minute(0), minute(1))
    assert len(found) == 200 and found["m7"] == big
