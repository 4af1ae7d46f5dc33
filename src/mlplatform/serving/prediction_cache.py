"""The shared prediction cache: version id + canonical features → answer; skipped, never fatal, when down."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from mlplatform.serving.metrics import ServingMetrics
from mlplatform.settings import PredictionsSettings
from mlplatform.stores.cache.base import Cache, CacheUnavailableError


class PredictionCache:
    def __init__(self, cache: Cache, settings: PredictionsSettings, metrics: ServingMetrics) -> None:
        self.cache = cache
        self.settings = settings
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        return self.settings.enable_cache

    @staticmethod
    def key(version_id: str, row: list[Any]) -> str:
        digest = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY), digest_size=16)
        return f"pred:{version_id}:{digest.hexdigest()}"

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.cache.get(key)
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
        try:
            await self.cache.set(key, orjson.dumps(answer), self.settings.cache_ttl_seconds)
        except CacheUnavailableError:
            self.metrics.cache_skips.labels("unavailable").inc()
