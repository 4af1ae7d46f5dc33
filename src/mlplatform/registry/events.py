"""Keeps this instance's registry snapshot current: change events from every instance, and a periodic poll."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import orjson
import structlog

from mlplatform.registry.snapshot import RegistrySnapshot
from mlplatform.registry.store import RegistryStore
from mlplatform.stores.cache.base import Cache, CacheUnavailableError, Subscription

log = structlog.get_logger(__name__)
CHANNEL = "registry.changed"
Listener = Callable[[str], Awaitable[None]]


class RegistryWatcher:
    """Publishes every registry change and applies everyone's changes to the local snapshot.

    Delivery through the cache's pub/sub is at-most-once, so a full reload every `refresh_seconds` repairs
    anything a lost message left stale. Listeners (the model cache) hear the name of every changed model.
    """

    def __init__(self, *, store: RegistryStore, cache: Cache, refresh_seconds: float) -> None:
        self.store = store
        self.cache = cache
        self.refresh_seconds = refresh_seconds
        self.snapshot = RegistrySnapshot()
        self.listeners: list[Listener] = []
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        try:
            self._subscription = await self.cache.subscribe(CHANNEL, self._on_message)
        except CacheUnavailableError:
            log.warning("registry changes from other instances arrive by polling until the cache is back")
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription:
            await self._subscription.close()

    async def reload(self) -> None:
        entries = await self.store.entries()
        changed = {
            name
            for name in set(entries) | set(self.snapshot.models)
            if entries.get(name) != self.snapshot.models.get(name)
        }
        self.snapshot = RegistrySnapshot(models=entries, loaded_at=time.time())
        await self._notify(changed)

    async def refresh(self, name: str) -> None:
        """Reload one model's entry now (after a local change, or on an event)."""
        entry = await self.store.entry(name)
        models = dict(self.snapshot.models)
        if entry is None:
            models.pop(name, None)
        else:
            models[name] = entry
        self.snapshot = RegistrySnapshot(models=models, loaded_at=self.snapshot.loaded_at)
        await self._notify({name})

    async def announce(self, name: str) -> None:
        """Apply a local change at once and tell every other instance."""
        await self.refresh(name)
        try:
            await self.cache.publish(CHANNEL, orjson.dumps({"model": name}))
        except CacheUnavailableError:
            log.warning(
                "registry change not announced; other instances see it at their next poll", model=name
            )

    async def _on_message(self, message: bytes) -> None:
        try:
            name = orjson.loads(message)["model"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed registry event", size=len(message))
            return
        await self.refresh(str(name))

    async def _notify(self, names: set[str]) -> None:
        for name in names:
            for listener in self.listeners:
                try:
                    await listener(name)
                except Exception:  # a listener's failure must not stop the others or the watcher
                    log.exception("registry listener failed", model=name)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.reload()
            except Exception as exc:  # the database may be away: keep serving the last snapshot
                log.warning("registry poll failed", error=f"{type(exc).__name__}: {exc}"[:200])
