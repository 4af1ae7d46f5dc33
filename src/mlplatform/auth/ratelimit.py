"""Per-key sliding-window rate limits: shared in Redis (one script call per request), in memory while Redis is
down or not configured. Limits are written as `limits` parses them ("100/second", "5000/hour")."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis.asyncio as redis
import structlog
from limits import RateLimitItem, parse

from mlplatform.batching import TurnBatcher
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


# The sliding-window counter of `LocalSlidingWindow`, on the Redis server's clock (instances' clocks may
# differ): the previous window's count weighted by how much of it still overlaps, plus the current one.
# KEYS[1] names the identity and period; both window keys derive from it and share its hash slot ({...}).
# ARGV: limit, period in ms. Returns {allowed (1/0), remaining, reset (ms since the epoch)}.
SLIDING_WINDOW = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = math.floor(now / period)
local current_key = KEYS[1] .. ':' .. window
local current = tonumber(redis.call('GET', current_key) or '0')
local previous = tonumber(redis.call('GET', KEYS[1] .. ':' .. (window - 1)) or '0')
local weighted = previous * (period - now % period) / period + current
local reset = (window + 1) * period
if weighted + 1 > limit then
    return {0, 0, reset}
end
redis.call('INCR', current_key)
redis.call('PEXPIRE', current_key, period * 2)
return {1, math.max(0, math.floor(limit - weighted - 1)), reset}
"""


class RedisSlidingWindow:
    """`LocalSlidingWindow` shared by every instance: one script call (EVALSHA) per hit, the hits of one turn
    of the event loop sent together in one pipeline (`TurnBatcher`)."""

    def __init__(self, url: str, password: str | None, timeout: float) -> None:
        parts = urlsplit(url)
        self.prefix = parse_qs(parts.query).get("prefix", [""])[0] + "ratelimit:"
        self.client = redis.Redis.from_url(
            urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self.script = self.client.register_script(SLIDING_WINDOW)
        self._hits: TurnBatcher[tuple[str, int, int], list[int]] = TurnBatcher(self._send)

    async def hit(self, item: RateLimitItem, identity: tuple[str, ...]) -> RateDecision:
        period_ms = item.get_expiry() * 1000
        key = f"{self.prefix}{{{':'.join(identity)}}}:{period_ms}"
        allowed, remaining, reset_ms = await self._hits.submit((key, item.amount, period_ms))
        return RateDecision(bool(allowed), item.amount, int(remaining), int(reset_ms) / 1000)

    async def _send(self, hits: list[tuple[str, int, int]]) -> list[list[int]]:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, amount, period_ms in hits:
                await self.script(keys=[key], args=[amount, period_ms], client=pipe)
            answers: list[list[int]] = await pipe.execute()
        return answers

    async def close(self) -> None:
        await self._hits.close()
        await self.client.aclose()


def _shared(settings: CacheSettings) -> RedisSlidingWindow | None:
    if not settings.url.startswith(("redis://", "rediss://")):
        return None
    password = settings.password.get_secret_value() if settings.password is not None else None
    return RedisSlidingWindow(settings.url, password, settings.timeout_ms / 1000)


class LocalSlidingWindow:
    """The same sliding-window counter as `limits`' (the previous window's count weighted by how much of it
    still overlaps, plus the current one), in plain dictionaries: a few microseconds instead of the ~80 µs the
    library's async memory storage costs on every request of the predict path."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.counts: dict[tuple[tuple[str, ...], int, int], int] = {}
        self._swept = 0

    def hit(self, item: RateLimitItem, identity: tuple[str, ...]) -> RateDecision:
        now = self.clock()
        period = item.get_expiry()
        window = int(now // period)
        key = (identity, period, window)
        current = self.counts.get(key, 0)
        previous = self.counts.get((identity, period, window - 1), 0)
        weighted = previous * (1 - (now % period) / period) + current
        reset_at = float((window + 1) * period)
        if weighted + 1 > item.amount:
            return RateDecision(False, item.amount, 0, reset_at)
        self.counts[key] = current + 1
        if window != self._swept:
            self._sweep(window)
        return RateDecision(True, item.amount, max(0, int(item.amount - weighted - 1)), reset_at)

    def _sweep(self, window: int) -> None:
        self._swept = window
        if len(self.counts) > 10_000:
            stale = [k for k in self.counts if k[2] < int(self.clock() // k[1]) - 1]
            for key in stale:
                del self.counts[key]


class RateLimiter:
    """Sliding-window counters keyed by identity (an API key id, or a client address for failed logins).

    With Redis, every instance shares the counters. A Redis call is bounded by `cache.timeout-ms` and guarded
    by a circuit breaker; while Redis is unavailable the counters live in this process's memory, so limits
    are still enforced (per instance) instead of being dropped.
    """

    def __init__(self, settings: CacheSettings) -> None:
        self.memory = LocalSlidingWindow()
        self.shared = _shared(settings)
        self.timeout = settings.timeout_ms / 1000
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds)

    async def hit(self, limit: str, *identity: str) -> RateDecision:
        item = parse_limit(limit)
        if self.shared is not None and self.breaker.allow():
            try:
                async with asyncio.timeout(self.timeout):
                    decision = await self.shared.hit(item, identity)
                self.breaker.record_success()
                return decision
            except Exception as exc:  # any Redis failure: fall back to memory, never fail the request
                self.breaker.record_failure()
                log.warning("rate limit falls back to memory", error=f"{type(exc).__name__}: {exc}"[:200])
        return self.memory.hit(item, identity)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
