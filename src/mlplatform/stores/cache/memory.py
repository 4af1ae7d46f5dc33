"""The embedded cache: a bounded in-process LRU with expiry, atomic counters and in-process pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import structlog

from mlplatform.stores.cache.base import Cache, CacheUnavailableError, MessageHandler, Subscription

logger = structlog.get_logger(__name__)

DEFAULT_MAX_ENTRIES = 100_000
EXPIRE_PER_WRITE = 32  # expired entries reclaimed by one write, at most
QUEUE_SIZE = 10_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_memory_url(url: str) -> int:
    """The `max-entries` of a `memory://[?max-entries=N]` URL."""
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"cache url must be memory://[?max-entries=N], not {url!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"max-entries"}
    if unknown:
        raise ValueError(f"unknown memory cache option(s): {', '.join(sorted(unknown))}")
    raw = query.get("max-entries", [str(DEFAULT_MAX_ENTRIES)])[-1]
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"max-entries must be a positive integer, not {raw!r}")
    return int(raw)


def check_ttl(ttl_seconds: float | None) -> None:
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")


class MemorySubscription(Subscription):
    """One subscriber: a queue drained by its own task, so a slow handler never blocks `publish`."""

    def __init__(self, cache: MemoryCache, channel: str, handler: MessageHandler) -> None:
        self._cache = cache
        self.channel = channel
        self._handler = handler
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        self._task = asyncio.create_task(self._deliver(), name=f"cache-subscription:{channel}")

    def offer(self, message: bytes) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("cache_subscription_queue_full", channel=self.channel)

    async def _deliver(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._handler(message)
            except Exception:
                logger.exception("cache_subscription_handler_failed", channel=self.channel)

    async def close(self) -> None:
        self._cache.unsubscribe(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class MemoryCache(Cache):
    """The embedded default. Shared by everything in one process, and only there.

    Every operation runs without awaiting between its read and its write, so on one event loop each
    one is atomic. Expired entries are dropped when read, and each write reclaims up to 32 that have expired,
    soonest first (a heap of expiry times): never a pass over the whole cache, which at 100,000 entries held
    the event loop for 20 ms every 30 s. Past `max_entries`, the least recently used entry is evicted.
    """

    scheme = "memory"
    local = True

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._expiries: list[tuple[float, str]] = []  # a heap; stale once a key is rewritten or deleted
        self._subscriptions: dict[str, list[MemorySubscription]] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryCache:
        return cls(max_entries=parse_memory_url(url))

    def __len__(self) -> int:
        return len(self._entries)

    def _check_open(self) -> None:
        if self._closed:
            raise CacheUnavailableError("the memory cache is closed")

    def _live(self, key: str, now: float) -> tuple[bytes, float | None] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _store(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        self._entries[key] = (value, expires_at)
        self._entries.move_to_end(key)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, key))
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        self._expire(now)

    def _expire(self, now: float) -> None:
        heap, entries = self._expiries, self._entries
        for _ in range(EXPIRE_PER_WRITE):
            if not heap or heap[0][0] > now:
                break
            at, key = heapq.heappop(heap)
            entry = entries.get(key)
            if entry is not None and entry[1] == at:  # else rewritten, deleted or evicted since
                del entries[key]
        if len(heap) > 2 * len(entries) + 1024:  # stale items pile up when keys are rewritten
            self._expiries = [(entry[1], k) for k, entry in entries.items() if entry[1] is not None]
            heapq.heapify(self._expiries)

    async def get(self, key: str) -> bytes | None:
        self._check_open()
        entry = self._live(key, self._clock())
        return None if entry is None else entry[0]

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        self._check_open()
        check_ttl(ttl_seconds)
        now = self._clock()
        expires_at = None if ttl_seconds is None else now + ttl_seconds
        self._store(key, bytes(value), expires_at, now)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float | None = None) -> None:
        self._check_open()
        check_ttl(ttl_seconds)
        now = self._clock()
        expires_at = None if ttl_seconds is None else now + ttl_seconds
        for key, value in items:
            self._store(key, bytes(value), expires_at, now)

    async def delete(self, key: str) -> bool:
        self._check_open()
        existed = self._live(key, self._clock()) is not None
        self._entries.pop(key, None)
        return existed

    async def incr(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        self._check_open()
        check_ttl(ttl_seconds)
        now = self._clock()
        entry = self._live(key, now)
        if entry is None:
            current, expires_at = 0, None if ttl_seconds is None else now + ttl_seconds
        else:
            try:
                current = int(entry[0])
            except ValueError:
                raise ValueError(f"the value of {key!r} is not an integer") from None
            expires_at = entry[1]
        value = current + amount
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"incrementing {key!r} would overflow a 64-bit integer")
        self._store(key, str(value).encode(), expires_at, now)
        return value

    async def publish(self, channel: str, message: bytes) -> None:
        self._check_open()
        for subscription in self._subscriptions.get(channel, ()):
            subscription.offer(bytes(message))

    async def subscribe(self, channel: str, handler: MessageHandler) -> Subscription:
        self._check_open()
        subscription = MemorySubscription(self, channel, handler)
        self._subscriptions.setdefault(channel, []).append(subscription)
        return subscription

    def unsubscribe(self, subscription: MemorySubscription) -> None:
        subscriptions = self._subscriptions.get(subscription.channel, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
        if not subscriptions:
            self._subscriptions.pop(subscription.channel, None)

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        subscriptions = [s for channel in self._subscriptions.values() for s in channel]
        for subscription in subscriptions:
            await subscription.close()
        self._entries.clear()
        self._expiries.clear()
