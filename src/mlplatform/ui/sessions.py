"""Web console sessions, kept in the cache backend (Redis in production, so every instance knows them).

The browser holds a random session id in a cookie; the cache holds, under the id's SHA-256 (so a reader of
the cache cannot take over a session), the signed-in key's id, a CSRF token and the session's times. The API
key itself is never kept: each request looks the key up by id, so a revoked key ends its sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson

from mlplatform.errors import Unavailable
from mlplatform.settings import UiSettings
from mlplatform.stores.cache.base import Cache, CacheUnavailableError

T = TypeVar("T")

KEY_PREFIX = "ui:session:"
# A session's expiry is pushed back at most this often: a busy page costs no cache write per request.
EXTEND_AFTER_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id: str  # the cookie's value: never stored
    key_id: str
    csrf: str
    started: float  # epoch seconds
    seen: float

    def csrf_matches(self, presented: str | None) -> bool:
        """Constant-time comparison with the token a form or htmx request sent."""
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def session_key(session_id: str) -> str:
    return KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Create, find (sliding expiry: each use extends it, up to a maximum age) and end sessions."""

    def __init__(self, cache: Cache, settings: UiSettings, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.clock = clock
        self.idle = settings.session_idle_minutes * 60
        self.max_age = settings.session_max_hours * 3600

    async def create(self, key_id: str) -> ConsoleSession:
        """A new session of the key `key_id`, stored; `Unavailable` while the cache backend is down."""
        now = self.clock()
        session = ConsoleSession(
            id=secrets.token_urlsafe(32), key_id=key_id, csrf=secrets.token_urlsafe(32), started=now, seen=now
        )
        await self._save(session, now)
        return session

    async def find(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of a cookie's id, its expiry extended; None when unknown, idle or too old."""
        if not session_id or len(session_id) > 128:
            return None
        raw = await self._cached(self.cache.get(session_key(session_id)))
        if raw is None:
            return None
        stored = orjson.loads(raw)
        now = self.clock()
        session = ConsoleSession(
            id=session_id,
            key_id=stored["key_id"],
            csrf=stored["csrf"],
            started=stored["started"],
            seen=stored["seen"],
        )
        if now - session.started >= self.max_age or now - session.seen >= self.idle:
            await self.end(session_id)
            return None
        if now - session.seen >= min(EXTEND_AFTER_SECONDS, self.idle / 10):
            session = ConsoleSession(session.id, session.key_id, session.csrf, session.started, now)
            await self._save(session, now)
        return session

    async def end(self, session_id: str) -> None:
        await self._cached(self.cache.delete(session_key(session_id)))

    async def _save(self, session: ConsoleSession, now: float) -> None:
        ttl = min(self.idle, self.max_age - (now - session.started))
        value = {"key_id": session.key_id, "csrf": session.csrf, "started": session.started, "seen": now}
        await self._cached(
            self.cache.set(session_key(session.id), orjson.dumps(value), ttl_seconds=max(ttl, 1.0))
        )

    @staticmethod
    async def _cached(operation: Awaitable[T]) -> T:
        try:
            return await operation
        except CacheUnavailableError:
            # Sessions live in the cache alone: without it no visitor can be told apart (the API still works).
            raise Unavailable(
                "the web console's session store (the cache) is unavailable", retry_after=5
            ) from None
