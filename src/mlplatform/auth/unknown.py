"""Looking up API keys this instance does not hold, without a flood of made-up keys reaching the database."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mlplatform.auth.store import StoredKey
from mlplatform.clock import utcnow

MAX_REMEMBERED = 100_000  # unknown key hashes held at most; the oldest go first


class UnknownKeys:
    """Finds a key hash missing from the in-process snapshot: normally a key created a moment ago on another
    instance, whose announcement has not arrived yet; under attack, a made-up key.

    A hash the database did not know, or knew as revoked or expired, is answered from memory for `ttl`
    seconds (`forget_all` ends that when a key is created or changed). Concurrent lookups of one hash share
    one query. At most `per_second` queries are made (a token bucket, bursts of as many); past that a key is
    answered as unknown without a query and without being remembered, so it is looked up again once the
    budget allows.
    """

    def __init__(
        self,
        find: Callable[[str], Awaitable[StoredKey | None]],
        *,
        ttl: float,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.find = find
        self.ttl = ttl
        self.per_second = per_second
        self.clock = clock
        # hash → (when it may be looked up again, what the database said: nothing, or an unusable key)
        self.unknown: OrderedDict[str, tuple[float, StoredKey | None]] = OrderedDict()
        self.pending: dict[str, asyncio.Future[StoredKey | None]] = {}
        self.tokens = self.burst = max(1.0, per_second)
        self.refilled = clock()
        self.lookups = 0  # queries made
        self.skipped = 0  # unknown keys answered without a query because the budget was spent

    async def look_up(self, key_hash: str) -> StoredKey | None:
        now = self.clock()
        remembered = self.unknown.get(key_hash)
        if remembered is not None:
            if remembered[0] > now:
                return remembered[1]
            del self.unknown[key_hash]
        pending = self.pending.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        if not self._take(now):
            self.skipped += 1
            return None
        future: asyncio.Future[StoredKey | None] = asyncio.get_running_loop().create_future()
        self.pending[key_hash] = future
        try:
            self.lookups += 1
            found = await self.find(key_hash)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: only the waiters, if any, see it
            raise
        finally:
            del self.pending[key_hash]
        future.set_result(found)
        if found is None or not found.usable(utcnow()):
            self._remember(key_hash, found, self.clock())
        return found

    def forget_all(self) -> None:
        """A key was created or changed: every hash may now be known."""
        self.unknown.clear()

    def _remember(self, key_hash: str, found: StoredKey | None, now: float) -> None:
        if self.ttl <= 0:
            return
        self.unknown[key_hash] = (now + self.ttl, found)
        self.unknown.move_to_end(key_hash)
        while len(self.unknown) > MAX_REMEMBERED:
            self.unknown.popitem(last=False)

    def _take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.per_second)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
