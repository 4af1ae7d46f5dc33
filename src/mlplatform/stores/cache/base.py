"""The cache interface: small values with TTLs, atomic counters and publish/subscribe."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

MessageHandler = Callable[[bytes], Awaitable[None]]


class CacheUnavailableError(Exception):
    """The cache backend did not answer in time or is known to be down (circuit open)."""


class Subscription(ABC):
    """A live subscription; `close()` stops delivery and releases its connection."""

    @abstractmethod
    async def close(self) -> None: ...


class Cache(ABC):
    """Shared, non-durable key/value state.

    Contract, for every backend:
    - Keys are str, values are bytes. `ttl_seconds` of None means no expiry; expired keys read as absent.
      A `ttl_seconds` that is not positive raises ValueError. `set` without a TTL removes an earlier one.
    - `get` returns None for a missing or expired key.
    - `incr` is atomic across every client of the backend; the TTL is set when the counter is created
      and not extended by later increments (fixed windows, rate limits). Incrementing a value that is
      not a 64-bit integer, or past one, raises ValueError.
    - `publish` delivers the message to every live subscription of the channel, on any instance.
      Delivery is at-most-once: a subscriber that is disconnected misses messages.
    - Any operation may raise `CacheUnavailableError`, and must do so quickly (the configured timeout)
      instead of hanging: callers degrade (skip the cache) rather than fail.
    - `ping` checks the backend now, ignoring any open circuit, and closes the circuit on success.
    - After `close()` (which also closes every subscription) operations raise `CacheUnavailableError`.
    """

    scheme: str = ""
    local: bool = False  # in this process: a write costs no round trip

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in order (None where missing), in one round trip where the backend can."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None: ...

    @abstractmethod
    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float | None = None) -> None:
        """Set every (key, value) with one TTL, in one round trip where the backend has them."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the key; True when it existed."""

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        """Add `amount` and return the new value (starting from 0)."""

    @abstractmethod
    async def publish(self, channel: str, message: bytes) -> None: ...

    @abstractmethod
    async def subscribe(self, channel: str, handler: MessageHandler) -> Subscription:
        """Call `handler` for each message on `channel` until the subscription is closed.

        A backend that loses its connection reconnects by itself; handler errors are logged, not raised.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Raise `CacheUnavailableError` unless the backend answers now."""

    @abstractmethod
    async def close(self) -> None: ...
