"""The API-key store on every database backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from mlplatform import db
from mlplatform.auth.keys import generate_key, hash_key
from mlplatform.auth.schemas import Role
from mlplatform.auth.store import NewKey, SqlApiKeyStore
from mlplatform.clock import utcnow
from mlplatform.errors import NotFound
from mlplatform.settings import DatabaseSettings


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlApiKeyStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlApiKeyStore(database)
    await database.dispose()


def new_key(key: str, owner: str = "ada", role: Role = Role.VIEWER, **extra: object) -> NewKey:
    values: dict[str, object] = {
        "key_hash": hash_key(key),
        "display_prefix": key[:12],
        "name": "test key",
        "role": role,
        "owner": owner,
        "rate_limit": None,
        "created_at": utcnow(),
        "expires_at": None,
    }
    values.update(extra)
    return NewKey(**values)  # type: ignore[arg-type]


async def test_create_find_list_get(store: SqlApiKeyStore) -> None:
    key = generate_key()
    created = await store.create(new_key(key, role=Role.EDITOR, rate_limit="5/second"))
    assert created.owner == "ada" and created.role is Role.EDITOR and created.rate_limit == "5/second"
    found = await store.find_by_hash(hash_key(key))
    assert found is not None and found.id == created.id and found.owner == "ada"
    assert await store.find_by_hash(hash_key(generate_key())) is None
    assert [k.id for k in await store.list()] == [created.id]
    assert (await store.get(created.id)).created_at.tzinfo is not None


async def test_owners_are_shared_and_created_once(store: SqlApiKeyStore) -> None:
    results = await asyncio.gather(*(store.create(new_key(generate_key(), owner="bob")) for _ in range(5)))
    assert {r.owner for r in results} == {"bob"}
    async with store.database.session() as session:
        users = (await session.execute(text("SELECT count(*) FROM users WHERE name = 'bob'"))).scalar_one()
    assert users == 1


async def test_revocation_is_idempotent_and_hides_the_key(store: SqlApiKeyStore) -> None:
    created = await store.create(new_key(generate_key()))
    first = await store.revoke(created.id, utcnow())
    second = await store.revoke(created.id, utcnow() + timedelta(hours=1))
    assert first.revoked_at == second.revoked_at
    assert await store.list() == []
    assert [k.id for k in await store.list(include_revoked=True)] == [created.id]
    assert await store.usable_keys(utcnow()) == []
    with pytest.raises(NotFound):
        await store.revoke("nope", utcnow())


async def test_usable_keys_leave_out_expired_ones(store: SqlApiKeyStore) -> None:
    now = utcnow()
    live = await store.create(new_key(generate_key(), expires_at=now + timedelta(days=1)))
    await store.create(new_key(generate_key(), expires_at=now - timedelta(seconds=1)))
    forever = await store.create(new_key(generate_key()))
    assert {k.id for k in await store.usable_keys(now)} == {live.id, forever.id}


async def test_touch_records_last_use(store: SqlApiKeyStore) -> None:
    created = await store.create(new_key(generate_key()))
    at = utcnow()
    await store.touch({created.id: at})
    last_used = (await store.get(created.id)).last_used_at
    assert last_used is not None and abs((last_used - at).total_seconds()) < 0.001


async def test_the_key_itself_is_never_stored(store: SqlApiKeyStore) -> None:
    key = generate_key()
    await store.create(new_key(key))
    async with store.database.session() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    dumped = repr(rows)
    assert key not in dumped and key[12:] not in dumped
    assert hash_key(key) in dumped


async def test_a_first_admin_is_created_only_while_no_usable_admin_exists(store: SqlApiKeyStore) -> None:
    now = utcnow()
    await store.create(new_key(generate_key(), role=Role.EDITOR))
    await store.create(new_key(generate_key(), role=Role.ADMIN, expires_at=now - timedelta(seconds=1)))
    first = await store.create_first_admin(new_key(generate_key(), owner="admin", role=Role.ADMIN))
    assert first is not None and first.role is Role.ADMIN and first.owner == "admin"
    assert await store.create_first_admin(new_key(generate_key(), owner="admin", role=Role.ADMIN)) is None
    await store.revoke(first.id, utcnow())
    again = await store.create_first_admin(new_key(generate_key(), owner="admin", role=Role.ADMIN))
    assert again is not None and again.id != first.id


async def test_instances_starting_together_create_one_first_admin(store: SqlApiKeyStore) -> None:
    databases = [db.Database(store.database.settings) for _ in range(4)]
    try:
        created = await asyncio.gather(
            *(
                SqlApiKeyStore(database).create_first_admin(
                    new_key(generate_key(), owner="admin", role=Role.ADMIN)
                )
                for database in databases
            )
        )
    finally:
        for database in databases:
            await database.dispose()
    assert len([c for c in created if c is not None]) == 1
    assert [k.role for k in await store.list()] == [Role.ADMIN]
