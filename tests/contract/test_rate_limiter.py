"""The rate limiter on every backend: in process memory, and shared through Redis (and back in memory while
Redis is away)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from mlplatform.auth.ratelimit import RateLimiter
from mlplatform.settings import CacheSettings
from tests.services import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    limiter = RateLimiter(CacheSettings(url=url))
    assert (limiter.shared is None) == (request.param == "memory")
    yield limiter
    await limiter.close()


async def test_a_limit_allows_its_amount_then_refuses_until_the_window_moves(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("3/minute", "key", "a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}
    now = time.time()
    window_end = (math.floor(now / 60) + 1) * 60
    assert all(now < d.reset_at <= window_end + 1 for d in decisions)
    assert 1 <= decisions[-1].retry_after <= 61
    assert decisions[-1].headers()[0] == (b"x-ratelimit-limit", b"3")


async def test_identities_and_periods_count_apart(limiter: RateLimiter) -> None:
    assert (await limiter.hit("1/minute", "key", "a")).allowed
    assert not (await limiter.hit("1/minute", "key", "a")).allowed
    assert (await limiter.hit("1/minute", "key", "b")).allowed  # another key
    assert (await limiter.hit("1/minute", "auth-failures", "a")).allowed  # another kind of identity
    assert (await limiter.hit("1/hour", "key", "a")).allowed  # another period


async def test_redis_counters_are_shared_and_expire(redis_url: str) -> None:
    first, second = (RateLimiter(CacheSettings(url=redis_url)) for _ in range(2))
    try:
        allowed = [(await limiter.hit("2/minute", "key", "s")).allowed for limiter in (first, second)]
        assert allowed == [True, True]
        assert not (await first.hit("2/minute", "key", "s")).allowed  # the second instance's hit counted
        assert second.shared is not None
        client = second.shared.client
        ttls = [await client.pttl(key) async for key in client.scan_iter(f"{second.shared.prefix}*")]
        assert ttls and all(0 < ttl <= 120_000 for ttl in ttls)  # two windows at the most
    finally:
        await first.close()
        await second.close()


async def test_a_dead_redis_falls_back_to_memory_and_still_limits(private_redis: RedisServer) -> None:
    limiter = RateLimiter(CacheSettings(url=private_redis.url, timeout_ms=200))
    try:
        assert (await limiter.hit("2/minute", "key", "d")).allowed
        private_redis.stop()
        decisions = [await limiter.hit("2/minute", "key", "d") for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]  # this instance's own count, in memory
    finally:
        await limiter.close()


async def test_keys_stay_under_the_configured_prefix(redis_url: str, redis_base_url: str) -> None:
    limiter = RateLimiter(CacheSettings(url=redis_url))
    try:
        await limiter.hit("5/minute", "key", "p")
        prefix = redis_url.split("prefix=", 1)[1]
        client = redis.Redis.from_url(redis_base_url)
        try:
            found = [key.decode() async for key in client.scan_iter(f"{prefix}*")]
        finally:
            await client.aclose()
        assert found and all(key.startswith(f"{prefix}ratelimit:") for key in found)
    finally:
        await limiter.close()


async def test_concurrent_hits_count_exactly(limiter: RateLimiter) -> None:
    """Hits of one turn of the event loop go to Redis together (one pipeline): each still counts once."""
    decisions = await asyncio.gather(*(limiter.hit("5/minute", "key", "c") for _ in range(8)))
    assert sorted(d.allowed for d in decisions) == [False] * 3 + [True] * 5
    assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1, 2, 3, 4]
