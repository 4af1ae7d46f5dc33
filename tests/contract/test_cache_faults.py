"""The Redis cache when its server stops, pauses or restarts: fail fast, open the circuit, recover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis

from mlplatform.settings import CacheSettings
from mlplatform.stores.cache import CacheUnavailableError, create_cache
from mlplatform.stores.cache.breaker import BreakerState
from mlplatform.stores.cache.redis import RedisCache
from tests.contract.test_cache import Inbox
from tests.services import RedisServer

T = TypeVar("T")

# A guard against hanging, not a speed assertion.
GUARD_SECONDS = 5.0
RECOVERY_SECONDS = 15.0

CacheFactory = Callable[..., RedisCache]


@pytest.fixture
async def make_cache(private_redis: RedisServer) -> AsyncIterator[CacheFactory]:
    made: list[RedisCache] = []

    def make(**overrides: Any) -> RedisCache:
        options: dict[str, Any] = {"url": private_redis.url, "timeout_ms": 200, "breaker_failures": 3}
        cache = create_cache(CacheSettings(**(options | overrides)))
        assert isinstance(cache, RedisCache)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        async with asyncio.timeout(GUARD_SECONDS):
            await cache.close()


async def unavailable(call: Awaitable[Any]) -> CacheUnavailableError:
    with pytest.raises(CacheUnavailableError) as caught:
        async with asyncio.timeout(GUARD_SECONDS):
            await call
    return caught.value


async def eventually(call: Callable[[], Awaitable[T]], seconds: float = RECOVERY_SECONDS) -> T:
    """The first result of `call` that is not CacheUnavailableError, retrying until the deadline."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                return await call()
            except CacheUnavailableError:
                await asyncio.sleep(0.1)


def state(cache: RedisCache) -> BreakerState:
    """Read through a call, so mypy does not keep an earlier assert's narrowing across state changes."""
    return cache.breaker.state


def count_connection_attempts(cache: RedisCache, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pool = cache.client.connection_pool
    attempts: list[int] = []
    original: Callable[..., Awaitable[Any]] = pool.get_connection

    async def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", counting)
    return attempts


async def test_stopped_redis_opens_the_circuit_and_ping_recovers(
    private_redis: RedisServer, make_cache: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = make_cache(breaker_reset_seconds=60)
    await cache.set("k", b"v")

    private_redis.stop()
    for _ in range(3):
        await unavailable(cache.get("k"))
    assert state(cache) is BreakerState.OPEN

    attempts = count_connection_attempts(cache, monkeypatch)
    for call in (cache.get("k"), cache.set("k", b"x"), cache.incr("n"), cache.publish("c", b"m")):
        error = await unavailable(call)
        assert "circuit open" in str(error)
    assert attempts == []
    await unavailable(cache.ping())
    assert attempts == [1]

    private_redis.start()
    # Redis is back, but the circuit is still open: calls are refused without trying the network.
    assert "circuit open" in str(await unavailable(cache.get("k")))
    assert attempts == [1]

    async with asyncio.timeout(GUARD_SECONDS):
        await cache.ping()
    assert state(cache) is BreakerState.CLOSED
    await cache.set("k", b"again")
    assert await cache.get("k") == b"again"
    assert await cache.incr("n", ttl_seconds=30) == 1


async def test_an_open_circuit_lets_a_trial_through_after_the_reset_time(
    private_redis: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(breaker_reset_seconds=0.3)
    private_redis.stop()
    for _ in range(3):
        await unavailable(cache.set("k", b"v"))
    assert state(cache) is BreakerState.OPEN

    private_redis.start()
    await eventually(lambda: cache.set("k", b"v"))
    assert state(cache) is BreakerState.CLOSED
    assert await cache.get("k") == b"v"


async def test_paused_redis_times_out_instead_of_hanging(
    private_redis: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(breaker_reset_seconds=0.3)
    await cache.set("k", b"v")

    private_redis.pause()
    try:
        for _ in range(3):
            error = await unavailable(cache.get("k"))
            assert "circuit open" not in str(error)
        assert state(cache) is BreakerState.OPEN
        await unavailable(cache.ping())
        await unavailable(cache.incr("n", ttl_seconds=5))
    finally:
        private_redis.resume()

    assert await eventually(lambda: cache.get("k")) == b"v"
    assert state(cache) is BreakerState.CLOSED
    async with asyncio.timeout(GUARD_SECONDS):
        await cache.ping()


async def test_a_subscription_survives_a_restart(
    private_redis: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(timeout_ms=500, breaker_reset_seconds=0.2)
    inbox = Inbox()
    subscription = await cache.subscribe("events", inbox)
    await cache.publish("events", b"before")
    assert await inbox.wait_for(1) == [b"before"]

    private_redis.stop()
    await asyncio.sleep(1.0)  # long enough for the subscription to notice and retry against a dead port
    private_redis.start()

    async def publish_until_heard() -> None:
        while b"after" not in inbox.messages:
            await cache.publish("events", b"after")
            await asyncio.sleep(0.1)

    await eventually(publish_until_heard)
    assert inbox.messages[0] == b"before"
    async with asyncio.timeout(GUARD_SECONDS):
        await subscription.close()


async def test_subscribing_while_redis_is_down_connects_later(
    private_redis: RedisServer, make_cache: CacheFactory
) -> None:
    cache = make_cache(breaker_reset_seconds=0.2)
    private_redis.stop()
    inbox = Inbox()
    async with asyncio.timeout(GUARD_SECONDS):
        subscription = await cache.subscribe("events", inbox)

    private_redis.start()

    async def publish_until_heard() -> None:
        while not inbox.messages:
            await cache.publish("events", b"late")
            await asyncio.sleep(0.1)

    await eventually(publish_until_heard)
    assert set(inbox.messages) == {b"late"}

    private_redis.stop()
    async with asyncio.timeout(GUARD_SECONDS):
        await subscription.close()
        await cache.close()


async def test_the_settings_password_wins_and_never_appears_in_errors(
    private_redis: RedisServer, make_cache: CacheFactory
) -> None:
    admin = redis.Redis(port=private_redis.port, socket_timeout=5)
    admin.config_set("requirepass", "right-secret")
    admin.close()
    url = private_redis.url.replace("redis://", "redis://:wrong-secret@")

    wrong = make_cache(url=url)
    error = await unavailable(wrong.get("k"))
    assert "secret" not in str(error)
    assert "secret" not in repr(error.__cause__)

    right = make_cache(url=url, password="right-secret")
    await right.set("k", b"v")
    assert await right.get("k") == b"v"

    private_redis.stop()
    error = await unavailable(right.get("k"))
    assert "secret" not in str(error)
