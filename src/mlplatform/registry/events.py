"""Keeps this instance's registry snapshot current: change events from every instance, and a periodic poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
import structlog

from mlplatform.registry.snapshot import RegistrySnapshot, Route
from mlplatform.registry.store import RegistryStore
from mlplatform.stores.cache.base import Cache
from mlplatform.stores.cache.feed import ChangeFeed

log = structlog.get_logger(__name__)
CHANNEL = "registry.changed"
Listener = Callable[[str], Awaitable[None]]
# The running experiments' routes: every model's (None) or one model's. Experiments provide it (`create_app`).
RouteSource = Callable[[str | None], Awaitable[dict[str, Route]]]


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
        self.routes: RouteSource | None = None
        # Refreshes read the database, then replace the snapshot: one at a time, so an older read can never
        # land after a newer one (an ended experiment's route coming back).
        self._lock = asyncio.Lock()
        self.feed = ChangeFeed(
            cache=cache,
            channel=CHANNEL,
            on_message=self._on_message,
            poll=self.reload,
            interval=refresh_seconds,
            what="registry",
        )

    async def start(self) -> None:
        await self.feed.start()  # subscribes, then loads

    async def stop(self) -> None:
        await self.feed.stop()

    async def reload(self) -> None:
        async with self._lock:
            changed = await self._reload()
        await self._notify(changed)

    async def _reload(self) -> set[str]:
        entries = await self.store.entries()
        routes = await self.routes(None) if self.routes is not None else {}
        changed = {
            name
            for name in set(entries) | set(self.snapshot.models)
            if entries.get(name) != self.snapshot.models.get(name)
        }
        self.snapshot = RegistrySnapshot(models=entries, loaded_at=time.time(), routes=routes)
        return changed

    async def refresh(self, name: str) -> None:
        """Reload one model's entry now (after a local change, or on an event)."""
        async with self._lock:
            await self._refresh(name)
        await self._notify({name})

    async def _refresh(self, name: str) -> None:
        entry = await self.store.entry(name)
        try:
            found = await self.routes(name) if self.routes is not None else {}
        except Exception:  # the routes stay as they were: the model's own change must still apply
            log.exception("experiment routes not refreshed", model=name)
            found = {name: self.snapshot.routes[name]} if name in self.snapshot.routes else {}
        models, routes = dict(self.snapshot.models), dict(self.snapshot.routes)
        if entry is None:
            models.pop(name, None)
        else:
            models[name] = entry
        if name in found:
            routes[name] = found[name]
        else:
            routes.pop(name, None)
        self.snapshot = RegistrySnapshot(models=models, loaded_at=self.snapshot.loaded_at, routes=routes)

    async def announce(self, name: str) -> None:
        """Apply a local change at once and tell every other instance."""
        await self.refresh(name)
        await self.feed.announce(orjson.dumps({"model": name}))

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
