"""The shared prediction cache: version id + canonical features → answer; skipped, never fatal, when down."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from mlplatform.batching import TurnBatcher
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.settings import PredictionsSettings
from mlplatform.stores.cache.base import Cache, CacheUnavailableError

MAX_PENDING = 10_000  # answers waiting to be written; beyond, new ones are skipped (and counted)


class PredictionCache:
    """On Redis, requests share round trips (`TurnBatcher`): the reads of one turn of the event loop go as one
    MGET (a request waits for it, as it would for its own GET); writes go behind the request, all of that
    turn's answers in one pipeline, so a request does not wait for its own write. The in-process cache is
    read and written at once."""

    def __init__(self, cache: Cache, settings: PredictionsSettings, metrics: ServingMetrics) -> None:
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self._reads: TurnBatcher[str, bytes | None] = TurnBatcher(cache.get_many)
        self._writes: TurnBatcher[tuple[str, bytes], None] = TurnBatcher(self._write)

    @property
    def enabled(self) -> bool:
        return self.settings.enable_cache

    @staticmethod
    def key(version_id: str, row: list[Any]) -> str:
        digest = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY), digest_size=16)
        return f"pred:{version_id}:{digest.hexdigest()}"

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await (self.cache.get(key) if self.cache.local else self._reads.submit(key))
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
        elif self._writes.pending >= MAX_PENDING:  # the cache is slower than the traffic: skip, not queue
            self.metrics.cache_skips.labels("backlog").inc()
        else:
            self._writes.submit((key, orjson.dumps(answer)))  # written behind: nobody waits for it

    async def _write(self, items: list[tuple[str, bytes]]) -> list[None]:
        try:
            await self.cache.set_many(items, self.settings.cache_ttl_seconds)
        except CacheUnavailableError:
            self.metrics.cache_skips.labels("unavailable").inc(len(items))
        return [None] * len(items)

    async def close(self) -> None:
        """Write what is queued (within the cache's own timeouts)."""
        await self._reads.close()
        await self._writes.close()
