"""Persistence of users and API keys: the interface and its SQL implementation (SQLite, PostgreSQL)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, false, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlplatform.auth.schemas import ApiKeyRead, Role
from mlplatform.auth.tables import ApiKeyRow, UserRow
from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import NotFound
from mlplatform.ids import new_id

# The PostgreSQL advisory lock that makes `create_first_admin` calls take turns ("mlpadmin" in ASCII).
FIRST_ADMIN_LOCK = 0x6D6C7061646D696E


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What authentication needs of a key (never the key itself)."""

    id: str
    key_hash: str
    role: Role
    owner: str
    rate_limit: str | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_hash: str
    display_prefix: str
    name: str
    role: Role
    owner: str
    rate_limit: str | None
    created_at: datetime
    expires_at: datetime | None


class ApiKeyStore(ABC):
    """Users and API keys.

    Contract: keys are identified by id and found by the SHA-256 hex digest of the key; the key itself
    is never given to the store. `create` creates the owner user when new. `create_first_admin` does the
    same unless a usable (neither revoked nor expired) admin key exists, atomically: of two instances
    calling it at once on one database, one creates the key and the other gets None. `revoke` is idempotent
    (keeps the first revocation time) and raises `NotFound` for an unknown id. `touch` records last-used
    times in one batch.
    """

    @abstractmethod
    async def create(self, key: NewKey) -> ApiKeyRead: ...

    @abstractmethod
    async def create_first_admin(self, key: NewKey) -> ApiKeyRead | None:
        """Create `key` (an admin key) when no usable admin key exists at `key.created_at`, else None."""

    @abstractmethod
    async def find_by_hash(self, key_hash: str) -> StoredKey | None: ...

    @abstractmethod
    async def usable_keys(self, now: datetime) -> list[StoredKey]:
        """Every key neither revoked nor expired at `now` (the in-process snapshot)."""

    @abstractmethod
    async def list(self, *, include_revoked: bool = False) -> list[ApiKeyRead]: ...

    @abstractmethod
    async def get(self, key_id: str) -> ApiKeyRead: ...

    @abstractmethod
    async def revoke(self, key_id: str, at: datetime) -> ApiKeyRead: ...

    @abstractmethod
    async def touch(self, last_used: dict[str, datetime]) -> None: ...


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _read(row: ApiKeyRow, owner: str) -> ApiKeyRead:
    return ApiKeyRead(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        owner=owner,
        prefix=row.display_prefix,
        rate_limit=row.rate_limit,
        created_at=as_utc(row.created_at),
        expires_at=_aware(row.expires_at),
        revoked_at=_aware(row.revoked_at),
        last_used_at=_aware(row.last_used_at),
    )


def _stored(row: ApiKeyRow, owner: str) -> StoredKey:
    return StoredKey(
        id=row.id,
        key_hash=row.key_hash,
        role=Role(row.role),
        owner=owner,
        rate_limit=row.rate_limit,
        expires_at=_aware(row.expires_at),
        revoked_at=_aware(row.revoked_at),
    )


def _usable(now: datetime) -> ColumnElement[bool]:
    return ApiKeyRow.revoked_at.is_(None) & (ApiKeyRow.expires_at.is_(None) | (ApiKeyRow.expires_at > now))


class SqlApiKeyStore(ApiKeyStore):
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, key: NewKey) -> ApiKeyRead:
        for attempt in range(2):
            try:
                async with self.database.session() as session, session.begin():
                    row = await self._add(session, key)
                break
            except IntegrityError:  # the same new owner created concurrently: the retry finds it
                if attempt:
                    raise
        return _read(row, key.owner)

    async def create_first_admin(self, key: NewKey) -> ApiKeyRead | None:
        async with self.database.session() as session, session.begin():
            await self._take_first_admin_lock(session)
            usable_admin = select(ApiKeyRow.id).where(
                ApiKeyRow.role == Role.ADMIN.value, _usable(key.created_at)
            )
            if await session.scalar(usable_admin.limit(1)) is not None:
                return None
            row = await self._add(session, key)
        return _read(row, key.owner)

    async def _take_first_admin_lock(self, session: AsyncSession) -> None:
        """Held until the transaction ends, so the check for an admin key and the insert are one step."""
        if self.database.backend == "postgresql":
            await session.execute(select(func.pg_advisory_xact_lock(FIRST_ADMIN_LOCK)))
        else:  # SQLite: any write, even of no row, holds the database's one write lock until commit
            await session.execute(
                update(ApiKeyRow).where(false()).values(id=ApiKeyRow.id),
                execution_options={"synchronize_session": False},
            )

    async def _add(self, session: AsyncSession, key: NewKey) -> ApiKeyRow:
        owner_id = await session.scalar(select(UserRow.id).where(UserRow.name == key.owner))
        if owner_id is None:
            owner_id = new_id()
            session.add(UserRow(id=owner_id, name=key.owner, email=None, created_at=key.created_at))
            await session.flush()
        row = ApiKeyRow(
            id=new_id(),
            key_hash=key.key_hash,
            display_prefix=key.display_prefix,
            name=key.name,
            role=key.role.value,
            owner_id=owner_id,
            rate_limit=key.rate_limit,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        session.add(row)
        return row

    def _joined(self) -> Select[ApiKeyRow, str]:
        return select(ApiKeyRow, UserRow.name).join(UserRow, UserRow.id == ApiKeyRow.owner_id)

    async def find_by_hash(self, key_hash: str) -> StoredKey | None:
        async with self.database.session() as session:
            found = (await session.execute(self._joined().where(ApiKeyRow.key_hash == key_hash))).first()
        return _stored(found[0], found[1]) if found else None

    async def usable_keys(self, now: datetime) -> list[StoredKey]:
        query = self._joined().where(_usable(now))
        async with self.database.session() as session:
            rows = (await session.execute(query)).all()
        return [_stored(row, owner) for row, owner in rows]

    async def list(self, *, include_revoked: bool = False) -> list[ApiKeyRead]:
        query = self._joined().order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        async with self.database.session() as session:
            rows = (await session.execute(query)).all()
        return [_read(row, owner) for row, owner in rows]

    async def get(self, key_id: str) -> ApiKeyRead:
        async with self.database.session() as session:
            found = (await session.execute(self._joined().where(ApiKeyRow.id == key_id))).first()
        if not found:
            raise NotFound(f"no API key with id {key_id!r}", details={"field": "id"})
        return _read(found[0], found[1])

    async def revoke(self, key_id: str, at: datetime) -> ApiKeyRead:
        async with self.database.session() as session, session.begin():
            await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return await self.get(key_id)

    async def touch(self, last_used: dict[str, datetime]) -> None:
        if not last_used:
            return
        async with self.database.session() as session, session.begin():
            for key_id, at in last_used.items():
                await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=at))
