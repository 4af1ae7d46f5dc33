"""The cache contract, run against every backend (memory and the shared Redis)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from mlplatform.settings import CacheSettings
from mlplatform.stores.cache import Cache, CacheUnavailableError, create_cache
from mlplatform.stores.cache.feed import ChangeFeed
from mlplatform.stores.cache.memory import EXPIRE_PER_WRITE, MemoryCache

# Generous: these tests check behaviour, not speed, and the machine may be busy.
TIMEOUT_MS = 2000


class Inbox:
    """A subscription handler that remembers what it received."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._changed = asyncio.Condition()

    async def __call__(self, message: bytes) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[bytes]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages


async def drop_keys(cache: Cache) -> None:
    from mlplatform.stores.cache.redis import RedisCache

    assert isinstance(cache, RedisCache)
    async for key in cache.client.scan_iter(match=f"{cache.prefix}*"):
        await cache.client.delete(key)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    store = create_cache(CacheSettings(url=url, timeout_ms=TIMEOUT_MS))
    assert store.scheme == request.param
    yield store
    if request.param == "redis":
        await drop_keys(store)
    await store.close()


@pytest.fixture
async def redis_pair(redis_url: str) -> AsyncIterator[tuple[Cache, Cache]]:
    first = create_cache(CacheSettings(url=f"{redis_url}a:", timeout_ms=TIMEOUT_MS))
    second = create_cache(CacheSettings(url=f"{redis_url}b:", timeout_ms=TIMEOUT_MS))
    yield first, second
    for store in (first, second):
        await drop_keys(store)
        await store.close()


async def test_get_set_delete(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"one")
    assert await cache.get("k") == b"one"
    await cache.set("k", b"two")
    assert await cache.get("k") == b"two"
    assert await cache.delete("k") is True
    assert await cache.get("k") is None
    assert await cache.delete("k") is False


async def test_binary_and_empty_values(cache: Cache) -> None:
    every_byte = bytes(range(256)) * 4
    await cache.set("bin", every_byte)
    await cache.set("empty", b"")
    assert await cache.get("bin") == every_byte
    assert await cache.get("empty") == b""


async def test_ttl_expiry(cache: Cache) -> None:
    await cache.set("short", b"v", ttl_seconds=0.2)
    await cache.set("forever", b"v")
    assert await cache.get("short") == b"v"
    await asyncio.sleep(0.5)
    assert await cache.get("short") is None
    assert await cache.delete("short") is False
    assert await cache.get("forever") == b"v"


async def test_get_many_answers_in_order_with_none_for_missing_keys(cache: Cache) -> None:
    await cache.set("a", b"1")
    await cache.set("c", b"3", ttl_seconds=0.2)
    assert await cache.get_many(["c", "b", "a", "a"]) == [b"3", None, b"1", b"1"]
    assert await cache.get_many([]) == []
    await asyncio.sleep(0.4)
    assert await cache.get_many(["a", "c"]) == [b"1", None]


async def test_set_many_writes_every_pair_with_one_ttl(cache: Cache) -> None:
    await cache.set("k0", b"old")
    await cache.set_many([(f"k{i}", f"v{i}".encode()) for i in range(50)], ttl_seconds=0.3)
    assert [await cache.get(f"k{i}") for i in range(50)] == [f"v{i}".encode() for i in range(50)]
    await cache.set_many([])  # nothing to write is not an error
    await asyncio.sleep(0.6)
    assert await cache.get("k0") is None and await cache.get("k49") is None
    with pytest.raises(ValueError):
        await cache.set_many([("k", b"v")], ttl_seconds=0)


async def test_set_without_ttl_removes_an_earlier_ttl(cache: Cache) -> None:
    await cache.set("k", b"old", ttl_seconds=0.2)
    await cache.set("k", b"new")
    await asyncio.sleep(0.5)
    assert await cache.get("k") == b"new"


@pytest.mark.parametrize("ttl", [0, -1.0])
async def test_non_positive_ttl_is_refused(cache: Cache, ttl: float) -> None:
    with pytest.raises(ValueError):
        await cache.set("k", b"v", ttl_seconds=ttl)
    with pytest.raises(ValueError):
        await cache.incr("n", ttl_seconds=ttl)


async def test_incr_counts_from_zero(cache: Cache) -> None:
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 5) == 6
    assert await cache.incr("n", -10) == -4
    assert await cache.get("n") == b"-4"
    await cache.set("m", b"41")
    assert await cache.incr("m") == 42


async def test_incr_of_a_non_integer_is_a_value_error(cache: Cache) -> None:
    await cache.set("text", b"hello")
    with pytest.raises(ValueError):
        await cache.incr("text")
    assert await cache.get("text") == b"hello"
    await cache.set("huge", str(2**63 - 1).encode())
    with pytest.raises(ValueError):
        await cache.incr("huge")
    await cache.ping()


async def test_concurrent_incr_is_atomic(cache: Cache) -> None:
    results = await asyncio.gather(*(cache.incr("hits", ttl_seconds=60) for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert await cache.get("hits") == b"200"


async def test_incr_sets_the_ttl_on_creation_only(cache: Cache) -> None:
    assert await cache.incr("window", ttl_seconds=1.0) == 1
    await asyncio.sleep(0.5)
    assert await cache.incr("window", ttl_seconds=1.0) == 2
    await asyncio.sleep(0.7)
    assert await cache.get("window") is None
    assert await cache.incr("window", ttl_seconds=1.0) == 1


async def test_incr_with_ttl_on_an_existing_counter_adds_no_ttl(cache: Cache) -> None:
    assert await cache.incr("plain") == 1
    assert await cache.incr("plain", ttl_seconds=0.2) == 2
    await asyncio.sleep(0.5)
    assert await cache.get("plain") == b"2"


async def test_publish_reaches_every_subscription_of_the_channel(cache: Cache) -> None:
    first, second, elsewhere = Inbox(), Inbox(), Inbox()
    subscriptions = [
        await cache.subscribe("events", first),
        await cache.subscribe("events", second),
        await cache.subscribe("other", elsewhere),
    ]
    payload = b"\x00\xffmodel-updated\n"
    await cache.publish("events", payload)
    await cache.publish("events", b"again")
    assert await first.wait_for(2) == [payload, b"again"]
    assert await second.wait_for(2) == [payload, b"again"]
    await cache.publish("other", b"marker")
    assert await elsewhere.wait_for(1) == [b"marker"]
    for subscription in subscriptions:
        await subscription.close()


async def test_no_delivery_after_close(cache: Cache) -> None:
    kept, closed = Inbox(), Inbox()
    keep = await cache.subscribe("events", kept)
    gone = await cache.subscribe("events", closed)
    await cache.publish("events", b"1")
    await closed.wait_for(1)
    await gone.close()
    await cache.publish("events", b"2")
    assert await kept.wait_for(2) == [b"1", b"2"]
    await asyncio.sleep(0.2)
    assert closed.messages == [b"1"]
    await keep.close()
    await gone.close()


async def test_a_failing_handler_does_not_stop_delivery(cache: Cache) -> None:
    inbox = Inbox()

    async def flaky(message: bytes) -> None:
        await inbox(message)
        if message == b"boom":
            raise RuntimeError("handler failed")

    subscription = await cache.subscribe("events", flaky)
    await cache.publish("events", b"boom")
    await cache.publish("events", b"after")
    assert await inbox.wait_for(2) == [b"boom", b"after"]
    await subscription.close()


async def test_a_change_feed_hears_a_change_made_while_its_first_load_reads(cache: Cache) -> None:
    """The feed subscribes before its initial load: a change announced meanwhile (by another instance) is
    delivered, instead of waiting for the next poll."""
    inbox, loads = Inbox(), []

    async def load() -> None:
        loads.append("load")
        if len(loads) == 1:  # another instance changes something while this one reads
            await cache.publish("changes", b"made during the first load")

    feed = ChangeFeed(cache=cache, channel="changes", on_message=inbox, poll=load, interval=60, what="t")
    await feed.start()
    assert loads == ["load"]
    assert await inbox.wait_for(1) == [b"made during the first load"]
    await feed.stop()


async def test_a_change_feed_whose_first_load_fails_can_start_again(cache: Cache) -> None:
    inbox, attempts = Inbox(), []

    async def load() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database not up yet")

    feed = ChangeFeed(cache=cache, channel="changes", on_message=inbox, poll=load, interval=60, what="t")
    with pytest.raises(ConnectionError):
        await feed.start()
    await cache.publish("changes", b"while stopped")
    await feed.start()  # one subscription again, not two
    await cache.publish("changes", b"once")
    assert await inbox.wait_for(1) == [b"once"]
    await asyncio.sleep(0.2)
    assert inbox.messages == [b"once"]
    await feed.stop()


async def test_ping(cache: Cache) -> None:
    await cache.ping()


async def test_a_closed_cache_is_unavailable(cache: Cache) -> None:
    inbox = Inbox()
    await cache.subscribe("events", inbox)
    await cache.close()
    for call in (cache.get("k"), cache.set("k", b"v"), cache.publish("events", b"x"), cache.ping()):
        with pytest.raises(CacheUnavailableError):
            await call
    assert inbox.messages == []


async def test_prefixes_isolate_redis_caches(redis_pair: tuple[Cache, Cache]) -> None:
    first, second = redis_pair
    await first.set("k", b"first")
    assert await second.get("k") is None
    await second.set("k", b"second")
    assert await first.get("k") == b"first"
    assert await first.incr("n") == 1
    assert await second.incr("n") == 1

    heard_first, heard_second = Inbox(), Inbox()
    sub_first = await first.subscribe("events", heard_first)
    sub_second = await second.subscribe("events", heard_second)
    await first.publish("events", b"for-first")
    await second.publish("events", b"for-second")
    assert await heard_first.wait_for(1) == [b"for-first"]
    assert await heard_second.wait_for(1) == [b"for-second"]
    await asyncio.sleep(0.2)
    assert heard_first.messages == [b"for-first"]
    assert heard_second.messages == [b"for-second"]
    await sub_first.close()
    await sub_second.close()


async def test_incr_is_atomic_across_redis_clients(redis_url: str) -> None:
    stores = [create_cache(CacheSettings(url=redis_url, timeout_ms=TIMEOUT_MS)) for _ in range(2)]
    results = await asyncio.gather(*(stores[i % 2].incr("shared") for i in range(200)))
    assert sorted(results) == list(range(1, 201))
    for store in stores:
        await drop_keys(store)
        await store.close()


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    store = create_cache(CacheSettings(url="memory://?max-entries=2"))
    await store.set("a", b"1")
    await store.set("b", b"2")
    assert await store.get("a") == b"1"
    await store.set("c", b"3")
    assert await store.get("b") is None
    assert await store.get("a") == b"1"
    assert await store.get("c") == b"3"
    await store.close()


async def test_memory_cache_reclaims_expired_entries_a_few_per_write() -> None:
    now = [0.0]
    store = MemoryCache(clock=lambda: now[0])
    await store.set("kept", b"v")  # the least recently used entry, and it never expires
    for i in range(100):
        await store.set(f"k{i}", b"v", ttl_seconds=1 + i % 3)
    await store.set("k0", b"rewritten", ttl_seconds=100)  # its first expiry is stale now
    assert len(store) == 101
    now[0] = 60.0
    await store.set("trigger", b"v")
    assert 102 - EXPIRE_PER_WRITE <= len(store) < 102  # bounded work per write: no pass over everything
    for _ in range(3):
        await store.set("trigger", b"v")
    assert len(store) == 3 and await store.get("k0") == b"rewritten"
    await store.close()


def test_creating_a_redis_cache_opens_no_connection() -> None:
    url = "rediss://:pw@unreachable.invalid:6380/2?prefix=p:&ssl_cert_reqs=none&max_connections=8"
    cache = create_cache(CacheSettings(url=url))
    assert cache.scheme == "rediss"


@pytest.mark.parametrize(
    "url",
    [
        "memory://?max-entries=0",
        "memory://?max-entries=x",
        "memory://?size=1",
        "redis://h:1/0?bogus=1",
        "redis://h:1/0?ssl_cert_reqs=none",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        create_cache(CacheSettings(url=url))


def test_memory_backend_does_not_import_redis() -> None:
    code = (
        "import sys\n"
        "from mlplatform.settings import CacheSettings\n"
        "from mlplatform.stores.cache import create_cache\n"
        "create_cache(CacheSettings())\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
