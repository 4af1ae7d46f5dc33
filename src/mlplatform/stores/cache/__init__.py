"""The cache store: pick a backend from the URL scheme."""

from __future__ import annotations

from collections.abc import Callable

from mlplatform.settings import CacheSettings
from mlplatform.stores.cache.base import Cache, CacheUnavailableError, MessageHandler, Subscription


def _memory(settings: CacheSettings) -> Cache:
    from mlplatform.stores.cache.memory import MemoryCache

    return MemoryCache.from_url(settings.url)


def _redis(settings: CacheSettings) -> Cache:
    from mlplatform.stores.cache.redis import RedisCache

    return RedisCache(settings)


BACKENDS: dict[str, Callable[[CacheSettings], Cache]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
}


def create_cache(settings: CacheSettings) -> Cache:
    """The cache for `settings.url`; no connection is opened until the first call."""
    scheme = settings.url.partition("://")[0]
    try:
        backend = BACKENDS[scheme]
    except KeyError:
        raise ValueError(f"cache url: unknown scheme {scheme!r}; use one of {sorted(BACKENDS)}") from None
    return backend(settings)


__all__ = ["Cache", "CacheUnavailableError", "MessageHandler", "Subscription", "create_cache"]
