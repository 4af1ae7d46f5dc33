"""Per-key sliding-window rate limits with `limits`: shared in Redis, in memory while Redis is down."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from mlplatform.settings import CacheSettings
from mlplatform.stores.cache.breaker import CircuitBreaker

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset_at)).encode()),
        ]


@functools.lru_cache(maxsize=1024)
def parse_limit(text: str) -> RateLimitItem:
    return parse(text)


def _redis_storage(settings: CacheSettings) -> RedisStorage | None:
    parts = urlsplit(settings.url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    prefix = parse_qs(parts.query).get("prefix", [""])[0]
    netloc = parts.netloc
    if settings.password is not None and "@" not in netloc:
        netloc = f":{settings.password.get_secret_value()}@{netloc}"
    uri = urlunsplit((f"async+{parts.scheme}", netloc, parts.path, "", ""))
    timeout = settings.timeout_ms / 1000
    return RedisStorage(
        uri,
        implementation="redispy",
        key_prefix=f"{prefix}limits",
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


class RateLimiter:
    """Sliding-window counters keyed by identity (an API key id, or a client address for failed logins).

    With Redis, every instance shares the counters. A Redis call is bounded by `cache.timeout-ms` and guarded
    by a circuit breaker; while Redis is unavailable the counters live in this process's memory, so limits
    are still enforced (per instance) instead of being dropped.
    """

    def __init__(self, settings: CacheSettings) -> None:
        self.memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        storage = _redis_storage(settings)
        self.shared = SlidingWindowCounterRateLimiter(storage) if storage else None
        self.storage = storage
        self.timeout = settings.timeout_ms / 1000 * 2  # two round trips: hit and stats
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds)

    async def hit(self, limit: str, *identity: str) -> RateDecision:
        item = parse_limit(limit)
        if self.shared is not None and self.breaker.allow():
            try:
                async with asyncio.timeout(self.timeout):
                    decision = await self._hit(self.shared, item, identity)
                self.breaker.record_success()
                return decision
            except Exception as exc:  # any Redis failure: fall back to memory, never fail the request
                self.breaker.record_failure()
                log.warning("rate limit falls back to memory", error=f"{type(exc).__name__}: {exc}"[:200])
        return await self._hit(self.memory, item, identity)

    async def blocked(self, limit: str, *identity: str) -> RateDecision | None:
        """The decision when `identity` is already over `limit` (without counting a hit), else None."""
        item = parse_limit(limit)
        limiter = self.shared if self.shared is not None and self.breaker.allow() else self.memory
        try:
            async with asyncio.timeout(self.timeout):
                allowed = await limiter.test(item, *identity)
                if allowed:
                    return None
                stats = await limiter.get_window_stats(item, *identity)
        except Exception:  # the failure path is best effort: never block on a broken Redis
            self.breaker.record_failure()
            return None
        return RateDecision(False, item.amount, stats.remaining, stats.reset_time)

    @staticmethod
    async def _hit(
        limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, identity: tuple[str, ...]
    ) -> RateDecision:
        allowed = await limiter.hit(item, *identity)
        stats = await limiter.get_window_stats(item, *identity)
        return RateDecision(allowed, item.amount, stats.remaining, stats.reset_time)

    async def close(self) -> None:
        if self.storage is not None:
            bridge = getattr(self.storage, "bridge", None)
            storage = getattr(bridge, "storage", None)
            if storage is not None:
                await storage.aclose()
