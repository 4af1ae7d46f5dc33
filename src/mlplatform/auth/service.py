"""Authentication (in-process snapshot of hashed keys), authorisation by role, rate limits, key management."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

import structlog

from mlplatform.auth.keys import display_prefix, generate_key, hash_key, same_hash
from mlplatform.auth.ratelimit import RateDecision, RateLimiter
from mlplatform.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    Permission,
    Principal,
    Role,
)
from mlplatform.auth.store import ApiKeyStore, NewKey, StoredKey
from mlplatform.auth.unknown import UnknownKeys
from mlplatform.clock import utcnow
from mlplatform.errors import Forbidden, InvalidInput, NotFound, RateLimited, Unauthorized
from mlplatform.settings import SecuritySettings
from mlplatform.stores.cache.base import Cache
from mlplatform.stores.cache.feed import ChangeFeed

log = structlog.get_logger(__name__)
KEYS_CHANNEL = "auth.keys"
ANONYMOUS = Principal(key_id="anonymous", owner="anonymous", role=Role.ADMIN)
BOOTSTRAP = Principal(key_id="bootstrap", owner="bootstrap", role=Role.ADMIN)
FIRST_ADMIN_NAME = "first admin key"
FIRST_ADMIN_OWNER = "admin"


class AuthService:
    """Answers "who is this, may they do that, and are they over their limit" without database I/O.

    Usable keys are held in memory by hash and refreshed when any instance changes a key (cache pub/sub) and
    every `refresh-seconds` as a safety net. A key missing from the snapshot first counts against its
    address's failed-authentication limit, then is looked up in the database (a key created a moment ago on
    another instance) through `UnknownKeys`, which remembers the misses and bounds the queries. Last-used
    times are written in batches.
    """

    def __init__(
        self, *, store: ApiKeyStore, settings: SecuritySettings, cache: Cache, limiter: RateLimiter
    ) -> None:
        self.store = store
        self.settings = settings
        self.cache = cache
        self.limiter = limiter
        bootstrap = settings.api_keys.bootstrap_admin_key
        self.bootstrap_hash = hash_key(bootstrap.get_secret_value()) if bootstrap else None
        self.snapshot: dict[str, StoredKey] = {}
        self.unknown = UnknownKeys(
            store.find_by_hash,
            ttl=settings.api_keys.unknown_key_ttl_seconds,
            per_second=settings.api_keys.unknown_key_lookups_per_second,
        )
        self.last_used: dict[str, datetime] = {}
        self.feed = ChangeFeed(
            cache=cache,
            channel=KEYS_CHANNEL,
            on_message=self._on_change,
            poll=self._refresh,
            interval=settings.api_keys.refresh_seconds,
            what="api keys",
        )

    @property
    def enabled(self) -> bool:
        return self.settings.api_keys.enabled

    async def start(self) -> None:
        await self.feed.start()  # subscribes, then loads

    async def stop(self) -> None:
        await self.feed.stop()
        with contextlib.suppress(Exception):
            await self.flush_last_used()

    async def reload(self) -> None:
        keys = await self.store.usable_keys(utcnow())
        self.snapshot = {key.key_hash: key for key in keys}

    async def _on_change(self, _: bytes) -> None:
        self.unknown.forget_all()
        await self.reload()

    async def _refresh(self) -> None:
        await self.reload()
        await self.flush_last_used()

    async def flush_last_used(self) -> None:
        pending, self.last_used = self.last_used, {}
        await self.store.touch(pending)

    async def authenticate(self, key: str | None, client: str = "unknown") -> Principal:
        """The key's principal. Keys this instance holds cost no I/O; any other first counts as a failed
        authentication of `client` (refused with 429 past the limit), and only then may be looked up."""
        if not self.enabled:
            return ANONYMOUS
        digest = hash_key(key) if key else None
        if digest is not None:
            if self.bootstrap_hash is not None and same_hash(digest, self.bootstrap_hash):
                return BOOTSTRAP
            stored = self.snapshot.get(digest)
            if stored is not None and same_hash(stored.key_hash, digest):
                return self._principal(stored)
        # Only keys this instance does not hold are counted, and only they are refused: a guesser is stopped
        # before any lookup, while a valid key from the same address (a shared NAT) keeps working.
        failures = await self.limiter.hit(self.settings.rate_limit.failed_auth, "auth-failures", client)
        if not failures.allowed:
            raise RateLimited(
                "too many failed authentications from this address", retry_after=failures.retry_after
            )
        if digest is None:
            raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer <key>")
        stored = await self.unknown.look_up(digest)
        if stored is None or not same_hash(stored.key_hash, digest):
            raise Unauthorized("invalid API key")
        if stored.revoked_at is not None:
            raise Unauthorized("API key revoked")
        principal = self._principal(stored)
        # Held from now on, until the next reload: its announcement may be late, or pub/sub down.
        self.snapshot[digest] = stored
        return principal

    def _principal(self, stored: StoredKey) -> Principal:
        now = utcnow()
        if stored.expires_at is not None and stored.expires_at <= now:
            raise Unauthorized("API key expired")
        self.last_used[stored.id] = now
        return Principal(key_id=stored.id, owner=stored.owner, role=stored.role, rate_limit=stored.rate_limit)

    async def guard(
        self, key: str | None, client: str, permission: Permission
    ) -> tuple[Principal, RateDecision | None]:
        """Authenticate, rate-limit and authorise a request; failed logins are limited per address."""
        principal = await self.authenticate(key, client)
        return principal, await self.admit(principal, permission)

    async def admit(self, principal: Principal, permission: Permission) -> RateDecision | None:
        """Count a request of an authenticated principal against its key's rate limit, then check that its
        role holds `permission`."""
        limits = self.settings.rate_limit
        decision = None
        if self.enabled and limits.enabled:
            decision = await self.limiter.hit(principal.rate_limit or limits.default, "key", principal.key_id)
            if not decision.allowed:
                raise RateLimited(
                    f"rate limit of {principal.rate_limit or limits.default} exceeded for this API key",
                    retry_after=decision.retry_after,
                    details={"limit": decision.limit, "reset": int(decision.reset_at)},
                    headers={k.decode(): v.decode() for k, v in decision.headers()},
                )
        self.check(principal, permission)
        return decision

    @staticmethod
    def check(principal: Principal, permission: Permission) -> None:
        """Forbidden unless the principal's role holds `permission`."""
        if not principal.can(permission):
            raise Forbidden(f"role {principal.role.value!r} may not {permission.value}")

    async def principal_of(self, key_id: str) -> Principal:
        """The principal of a key known only by its id (a web console session holds the id, never the key);
        Unauthorized once the key is revoked, expired or deleted. Keys this instance holds cost no I/O."""
        if not self.enabled:
            return ANONYMOUS
        if key_id == BOOTSTRAP.key_id and self.bootstrap_hash is not None:
            return BOOTSTRAP
        for stored in self.snapshot.values():
            if stored.id == key_id:
                return self._principal(stored)
        # Not held: revoked or expired (so dropped from the snapshot), or just created on another instance.
        try:
            found = await self.store.get(key_id)
        except NotFound:
            raise Unauthorized("API key no longer exists") from None
        if found.revoked_at is not None:
            raise Unauthorized("API key revoked")
        if found.expires_at is not None and found.expires_at <= utcnow():
            raise Unauthorized("API key expired")
        return Principal(key_id=found.id, owner=found.owner, role=found.role, rate_limit=found.rate_limit)

    async def create_key(self, request: ApiKeyCreate) -> ApiKeyCreated:
        key = generate_key()
        now = utcnow()
        expires_at = request.expires_at
        if request.expires_in_days is not None:
            expires_at = now + timedelta(days=request.expires_in_days)
        if expires_at is not None and expires_at <= now:
            raise InvalidInput(
                "expires_at must be in the future",
                details=[{"field": "expires_at", "problem": "must be in the future"}],
            )
        stored = await self.store.create(
            NewKey(
                key_hash=hash_key(key),
                display_prefix=display_prefix(key),
                name=request.name,
                role=request.role,
                owner=request.owner,
                rate_limit=request.rate_limit,
                created_at=now,
                expires_at=expires_at,
            )
        )
        self.unknown.forget_all()
        await self._announce()
        log.info("api key created", key_id=stored.id, role=stored.role.value, owner=stored.owner)
        return ApiKeyCreated(**stored.model_dump(), key=key)

    async def ensure_first_admin_key(self) -> ApiKeyCreated | None:
        """An admin key for a database that has no usable one, so a fresh install can use its API at all.

        None when keys are off, come from configuration (`bootstrap-admin-key`), this is turned off
        (`create-first-admin-key: false`), or a usable admin key exists (also one another instance has just
        created). The caller decides where this is allowed (the development profile only) and shows the key.
        """
        api_keys = self.settings.api_keys
        if not (self.enabled and api_keys.create_first_admin_key) or api_keys.bootstrap_admin_key:
            return None
        key = generate_key()
        stored = await self.store.create_first_admin(
            NewKey(
                key_hash=hash_key(key),
                display_prefix=display_prefix(key),
                name=FIRST_ADMIN_NAME,
                role=Role.ADMIN,
                owner=FIRST_ADMIN_OWNER,
                rate_limit=None,
                created_at=utcnow(),
                expires_at=None,
            )
        )
        if stored is None:
            return None
        await self._announce()
        log.info("first admin key created", key_id=stored.id)
        return ApiKeyCreated(**stored.model_dump(), key=key)

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKeyRead]:
        return await self.store.list(include_revoked=include_revoked)

    async def get_key(self, key_id: str) -> ApiKeyRead:
        return await self.store.get(key_id)

    async def revoke_key(self, key_id: str) -> ApiKeyRead:
        revoked = await self.store.revoke(key_id, utcnow())
        self.snapshot = {h: k for h, k in self.snapshot.items() if k.id != key_id}
        await self._announce()
        log.info("api key revoked", key_id=key_id)
        return revoked

    async def _announce(self) -> None:
        await self.feed.announce(b"changed")
