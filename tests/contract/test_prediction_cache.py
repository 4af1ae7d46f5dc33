"""The prediction cache on every cache backend: answers round-trip, the confidence gate, and on Redis the
shared round trips (one MGET per turn of the event loop, writes pipelined behind the request)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from mlplatform.metrics import Metrics
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.prediction_cache import PredictionCache
from mlplatform.settings import CacheSettings, PredictionsSettings
from mlplatform.stores.cache import create_cache
from tests.services import RedisServer

SETTINGS = PredictionsSettings(cache_min_confidence=0.5)


def prediction_cache(url: str) -> PredictionCache:
    metrics = ServingMetrics(Metrics(application="t", environment="test"))
    return PredictionCache(create_cache(CacheSettings(url=url, timeout_ms=200)), SETTINGS, metrics)


def skipped(cache: PredictionCache, reason: str) -> float:
    return float(cache.metrics.cache_skips.labels(reason)._value.get())


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[PredictionCache]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    found = prediction_cache(url)
    yield found
    await found.close()
    await found.cache.close()


async def written(cache: PredictionCache, keys: list[str]) -> None:
    """Until every key can be read: at once in memory, after a turn of the loop or two on Redis."""
    async with asyncio.timeout(5):
        while None in await cache.cache.get_many(keys):
            await asyncio.sleep(0.01)


async def test_answers_round_trip_and_the_gate_keeps_unsure_ones_out(cache: PredictionCache) -> None:
    keys = [cache.key("m-v1", [float(i), 2.0]) for i in range(3)]
    assert len(set(keys)) == 3 and keys[0] == cache.key("m-v1", [0.0, 2.0])
    await cache.put(keys[0], {"prediction": 1, "probabilities": {"0": 0.1, "1": 0.9}}, 0.9)
    await cache.put(keys[1], {"prediction": "x", "probabilities": None}, None)  # regressors: no gate
    await cache.put(keys[2], {"prediction": 0}, 0.4)  # below cache-min-confidence
    await written(cache, keys[:2])
    found = await asyncio.gather(*(cache.get(key) for key in keys))
    assert found == [
        {"prediction": 1, "probabilities": {"0": 0.1, "1": 0.9}},
        {"prediction": "x", "probabilities": None},
        None,
    ]
    assert skipped(cache, "low_confidence") == 1
    assert cache.metrics.cache_hits._value.get() == 2 and cache.metrics.cache_misses._value.get() == 1


async def test_reads_of_one_turn_share_one_mget_and_writes_one_pipeline(private_redis: RedisServer) -> None:
    cache = prediction_cache(private_redis.url)
    stats = redis.Redis.from_url(private_redis.url)
    try:
        keys = [cache.key("m-v1", [float(i)]) for i in range(12)]
        for key in keys:  # no turn of the loop in between: all twelve wait for one pipelined write
            await cache.put(key, {"prediction": key[-4:]}, None)
        await written(cache, keys)
        before = await stats.info("commandstats")
        found = await asyncio.gather(*(cache.get(key) for key in keys))
        after = await stats.info("commandstats")
        assert found == [{"prediction": key[-4:]} for key in keys]
        calls = {name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"] for name in after}
        assert calls.get("cmdstat_mget") == 1 and "cmdstat_get" not in calls
        assert after["cmdstat_set"]["calls"] == 12  # every answer written, none twice
    finally:
        await cache.close()
        await cache.cache.close()
        await stats.aclose()


async def test_a_dead_redis_is_a_miss_for_every_waiting_read(private_redis: RedisServer) -> None:
    cache = prediction_cache(private_redis.url)
    try:
        private_redis.stop()
        found = await asyncio.gather(*(cache.get(f"k{i}") for i in range(5)))
        assert found == [None] * 5 and skipped(cache, "unavailable") == 5
        await cache.put("k", {"prediction": 1}, 1.0)
        await cache.close()  # the write behind fails, and is counted, without raising
        assert skipped(cache, "unavailable") == 6
    finally:
        await cache.cache.close()
