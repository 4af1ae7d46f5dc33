"""The shared prediction cache: version id + canonical features → answer; skipped, never fatal, when down."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from mlplatform.serving.metrics import ServingMetrics
from mlplatform.settings import PredictionsSettings
from mlplatform.stores.cache.base import Cache, CacheUnavailableError

MAX_PENDING = 10_000  # answers waiting to be written; beyond, new ones are skipped (and counted)


class PredictionCache:
    """On Redis, requests share round trips: redis-py spends ~170 µs of CPU per command, and a few dozen per
    command sent together. Reads of one turn of the event loop go as one MGET (a request waits for it, as it
    would for its own GET); writes go behind the request, at the next turn, all of that turn's answers in one
    pipeline, so a request does not wait for its own write. The in-process cache is read and written at
    once."""

    def __init__(self, cache: Cache, settings: PredictionsSettings, metrics: ServingMetrics) -> None:
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self._pending: list[tuple[str, bytes]] = []
        self._reads: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.settings.enable_cache

    @staticmethod
    def key(version_id: str, row: list[Any]) -> str:
        digest = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY), digest_size=16)
        return f"pred:{version_id}:{digest.hexdigest()}"

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await (self.cache.get(key) if self.cache.local else self._read(key))
        except CacheUnavailableError:
            self.metrics.cache_skips.labels("unavailable").inc()
            return None
        if raw is None:
            self.metrics.cache_misses.inc()
            return None
        self.metrics.cache_hits.inc()
        found: dict[str, Any] = orjson.loads(raw)
        return found

    async def put(self, key: str, answer: dict[str, Any], confidence: float | None) -> None:
        if confidence is not None and confidence < self.settings.cache_min_confidence:
            self.metrics.cache_skips.labels("low_confidence").inc()
            return
        if self.cache.local:
            await self._write([(key, orjson.dumps(answer))])
            return
        if len(self._pending) >= MAX_PENDING:  # the cache is slower than the traffic: skip, never queue more
            self.metrics.cache_skips.labels("backlog").inc()
            return
        self._pending.append((key, orjson.dumps(answer)))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _read(self, key: str) -> asyncio.Future[bytes | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._reads.append((key, future))
        if len(self._reads) == 1:
            loop.call_soon(self._start, self._read_all)
        return future

    async def _read_all(self) -> None:
        reads, self._reads = self._reads, []
        try:
            values = await self.cache.get_many([key for key, _ in reads])
        except Exception as exc:  # every waiting request gets the error (CacheUnavailableError: a miss)
            for _, future in reads:
                if not future.done():  # a request that went away cancelled its own
                    future.set_exception(exc)
            return
        for (_, future), value in zip(reads, values, strict=True):
            if not future.done():
                future.set_result(value)

    def _start_flush(self) -> None:
        self._start(self._flush)

    def _start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(work())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        items, self._pending = self._pending, []
        if items:
            await self._write(items)

    async def _write(self, items: list[tuple[str, bytes]]) -> None:
        try:
            await self.cache.set_many(items, self.settings.cache_ttl_seconds)
        except CacheUnavailableError:
            self.metrics.cache_skips.labels("unavailable").inc(len(items))

    async def close(self) -> None:
        """Write what is queued (within the cache's own timeouts)."""
        await self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
