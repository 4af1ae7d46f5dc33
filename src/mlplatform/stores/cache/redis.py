"""The Redis cache: short timeouts, a circuit breaker, key prefixes and self-healing subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from mlplatform.settings import CacheSettings
from mlplatform.stores.cache.base import Cache, CacheUnavailableError, MessageHandler, Subscription
from mlplatform.stores.cache.breaker import CircuitBreaker
from mlplatform.stores.cache.memory import check_ttl

logger = structlog.get_logger(__name__)

T = TypeVar("T")

NETWORK_ERRORS = (RedisError, OSError, TimeoutError)
DEFAULT_MAX_CONNECTIONS = 100
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 1.0
KEEPALIVE_SECONDS = 5.0
POLL_SECONDS = 1.0

# The TTL is set only when this call creates the counter, so later increments never extend a window.
INCR_SCRIPT = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""


def split_redis_url(url: str) -> tuple[str, str]:
    """The URL without its `prefix` query option, and the prefix."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    prefix = query.pop("prefix", [""])[-1]
    known = set(URL_QUERY_ARGUMENT_PARSERS)
    if parts.scheme == "rediss":
        known |= set(inspect.signature(SSLConnection).parameters) - {"kwargs"}
    unknown = set(query) - known
    if unknown:
        raise ValueError(f"unknown redis cache option(s): {', '.join(sorted(unknown))}")
    rest = urlencode({name: values[-1] for name, values in query.items()})
    return urlunsplit(parts._replace(query=rest)), prefix


def ttl_ms(ttl_seconds: float) -> int:
    return max(1, round(ttl_seconds * 1000))


class RedisCache(Cache):
    """Redis behind a circuit breaker. Constructing it does no I/O: connections open on first use.

    Every key and channel gets the URL's `prefix`, so deployments and tests can share one Redis.
    Each call is bounded by `timeout_ms`; errors and timeouts raise `CacheUnavailableError` (never
    naming the password) and count towards opening the circuit, during which calls fail at once.
    """

    def __init__(self, settings: CacheSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        url, self.prefix = split_redis_url(settings.url)
        options: dict[str, Any] = dict(parse_url(url))
        if settings.password is not None:
            options["password"] = settings.password.get_secret_value()
        self.scheme = urlsplit(url).scheme
        self._secret: str | None = options.get("password") or None
        self._where = f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
        self._timeout = settings.timeout_ms / 1000
        options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        options.update(
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            # Keeps every connect to one handshake, and timeouts from being relaxed during maintenance.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        # Blocking: a burst waits (within the timeout) for a free connection instead of failing at once.
        self._client = Redis(connection_pool=BlockingConnectionPool(**options))
        self._incr_script = self._client.register_script(INCR_SCRIPT)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_seconds, clock)
        self._subscriptions: set[RedisSubscription] = set()
        self._closed = False

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    @property
    def client(self) -> Redis:
        return self._client

    def key(self, name: str) -> str:
        return self.prefix + name

    def unavailable(self, action: str, exc: BaseException) -> CacheUnavailableError:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._secret:
            detail = detail.replace(self._secret, "***")
        return CacheUnavailableError(f"redis at {self._where}: {action} failed ({detail})")

    async def _call(self, action: str, operation: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise CacheUnavailableError("the redis cache is closed")
        if not self.breaker.allow():
            raise CacheUnavailableError(f"redis at {self._where}: circuit open, {action} not attempted")
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation()
        except NETWORK_ERRORS as exc:
            self.breaker.record_failure()
            raise self.unavailable(action, exc) from exc
        self.breaker.record_success()
        return result

    async def get(self, key: str) -> bytes | None:
        async def run() -> bytes | None:
            return cast("bytes | None", await self._client.get(self.key(key)))

        return await self._call("get", run)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)
        px = None if ttl_seconds is None else ttl_ms(ttl_seconds)
        await self._call("set", lambda: self._client.set(self.key(key), bytes(value), px=px))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []

        async def run() -> list[bytes | None]:
            return cast("list[bytes | None]", await self._client.mget([self.key(key) for key in keys]))

        return await self._call("get_many", run)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)
        px = None if ttl_seconds is None else ttl_ms(ttl_seconds)

        async def run() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self.key(key), bytes(value), px=px)
                await pipe.execute()

        if items:
            await self._call("set_many", run)

    async def delete(self, key: str) -> bool:
        removed: int = await self._call("delete", lambda: self._client.delete(self.key(key)))
        return removed > 0

    async def incr(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        check_ttl(ttl_seconds)
        expire = "" if ttl_seconds is None else str(ttl_ms(ttl_seconds))

        async def run() -> int:
            try:
                return int(await self._incr_script(keys=[self.key(key)], args=[amount, expire]))
            except ResponseError as exc:
                if "not an integer" in str(exc) or "overflow" in str(exc):
                    raise _CallerError(f"cannot increment {key!r}: {exc}") from None
                raise

        try:
            return await self._call("incr", run)
        except _CallerError as exc:
            # Redis answered, so this says nothing about its health.
            self.breaker.record_success()
            raise ValueError(str(exc)) from None

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call("publish", lambda: self._client.publish(self.key(channel), bytes(message)))

    async def subscribe(self, channel: str, handler: MessageHandler) -> Subscription:
        """Subscribe on a dedicated connection that reconnects (and re-subscribes) by itself.

        Returns once Redis has confirmed the subscription, or after the timeout when Redis cannot be
        reached: the subscription then keeps trying in the background and delivers once connected.
        """
        if self._closed:
            raise CacheUnavailableError("the redis cache is closed")
        subscription = RedisSubscription(self, self.key(channel), handler)
        self._subscriptions.add(subscription)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await subscription.active.wait()
        return subscription

    def forget(self, subscription: RedisSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def ping(self) -> None:
        if self._closed:
            raise CacheUnavailableError("the redis cache is closed")
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.ping()
        except NETWORK_ERRORS as exc:
            self.breaker.record_failure()
            raise self.unavailable("ping", exc) from exc
        self.breaker.record_success()

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._client.aclose(close_connection_pool=True)


class _CallerError(Exception):
    """Redis refused the command itself (not a connectivity problem)."""


class RedisSubscription(Subscription):
    """A background task holding one pub/sub connection, re-made with backoff whenever it fails."""

    def __init__(self, cache: RedisCache, channel: str, handler: MessageHandler) -> None:
        self._cache = cache
        self.channel = channel
        self._handler = handler
        self.active = asyncio.Event()
        self._outage = False
        self._task = asyncio.create_task(self._run(), name=f"cache-subscription:{channel}")

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while True:
            pubsub = self._cache.client.pubsub()
            try:
                await self._listen(pubsub)
            except NETWORK_ERRORS as exc:
                if self.active.is_set():
                    delay = RECONNECT_FIRST_DELAY
                self.active.clear()
                # One warning per outage; the retries after it are expected until Redis is back.
                (logger.debug if self._outage else logger.warning)(
                    "cache_subscription_reconnecting",
                    channel=self.channel,
                    retry_in=delay,
                    error=str(self._cache.unavailable("subscribe", exc)),
                )
                self._outage = True
            finally:  # bounded: a close must not hold up a shutdown that cancelled this task
                with contextlib.suppress(*NETWORK_ERRORS):
                    async with asyncio.timeout(self._cache.timeout_seconds):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._cache.timeout_seconds):
            await pubsub.subscribe(self.channel)
        heard = loop.time()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=POLL_SECONDS)
            now = loop.time()
            if message is not None:
                if message["type"] == "subscribe":
                    self._subscribed()
                elif message["type"] == "message":
                    await self._deliver(message["data"])
                heard, pinged = loop.time(), False
            elif now - heard > 2 * KEEPALIVE_SECONDS:
                raise TimeoutError("no answer to the keepalive ping")
            elif now - heard > KEEPALIVE_SECONDS and not pinged:
                # A silent network loss sends no FIN; only an unanswered ping reveals it.
                async with asyncio.timeout(self._cache.timeout_seconds):
                    await pubsub.ping()
                pinged = True

    def _subscribed(self) -> None:
        if self._outage:
            logger.info("cache_subscription_restored", channel=self.channel)
            self._outage = False
        self.active.set()

    async def _deliver(self, data: bytes) -> None:
        try:
            await self._handler(data)
        except Exception:
            logger.exception("cache_subscription_handler_failed", channel=self.channel)

    async def close(self) -> None:
        self._cache.forget(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
