"""Keep in-process state current across instances: change messages on a channel, and a periodic poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from mlplatform.stores.cache.base import Cache, CacheUnavailableError, MessageHandler, Subscription

log = structlog.get_logger(__name__)


class ChangeFeed:
    """Calls `on_message` for every message on `channel` and `poll` every `interval` seconds.

    Pub/sub delivery is at-most-once, so the poll repairs whatever a lost message (or a cache outage at start)
    left stale. A failing poll is logged and retried at the next interval: callers keep their last state.
    """

    def __init__(
        self,
        *,
        cache: Cache,
        channel: str,
        on_message: MessageHandler,
        poll: Callable[[], Awaitable[None]],
        interval: float,
        what: str,
    ) -> None:
        self.cache = cache
        self.channel = channel
        self.on_message = on_message
        self.poll = poll
        self.interval = interval
        self.what = what
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, then poll once (the initial load), then keep polling.

        Subscribing first means a change made while the initial load reads is still heard: a change
        announced between a load and a later subscription would be missed until the next poll. A failing
        initial load unsubscribes again and raises, so the caller can retry `start`.
        """
        try:
            self._subscription = await self.cache.subscribe(self.channel, self.on_message)
        except CacheUnavailableError:
            log.warning(
                "changes from other instances arrive by polling until the cache is back", what=self.what
            )
        try:
            await self.poll()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._subscription:
            await self._subscription.close()
            self._subscription = None

    async def announce(self, message: bytes) -> None:
        try:
            await self.cache.publish(self.channel, message)
        except CacheUnavailableError:
            log.warning("change not announced; other instances see it at their next poll", what=self.what)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception as exc:  # the database may be away for a while: keep the last state
                log.warning("refresh failed", what=self.what, error=f"{type(exc).__name__}: {exc}"[:200])
