"""A flood of made-up API keys costs the database almost nothing: unknown keys are limited per address first,
remembered once looked up, and looked up at a bounded rate; a repeated header means the same everywhere."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from mlplatform.app import create_app
from mlplatform.auth.keys import generate_key, hash_key
from mlplatform.auth.schemas import Role
from mlplatform.auth.store import NewKey
from mlplatform.platform import Platform
from tests.api.conftest import ADMIN_KEY, AppFactory, settings_for, two_instances, wait_started

LOOKUPS_PER_SECOND = 10.0
PREDICT = {"model": "m", "features": [1.0, 2.0]}


@contextmanager
def key_lookups(platform: Platform) -> Iterator[list[str]]:
    """The lookups of one key by its hash that the app's engine sends while the block runs (snapshot reloads
    after a change, and start-up sweeps of other tables, are not caused by requests)."""
    statements: list[str] = []
    engine = platform.database.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "WHERE api_keys.key_hash = " in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
async def flooded(
    tmp_path: Path, backend: dict[str, Any]
) -> AsyncIterator[tuple[Platform, Any, list[httpx.AsyncClient]]]:
    """A started app and clients from 1,000 addresses, with no key of their own."""
    settings = settings_for(
        tmp_path,
        **backend,
        security={"api-keys": {"unknown-key-lookups-per-second": LOOKUPS_PER_SECOND}},
    )
    app = create_app(settings)
    async with AsyncExitStack() as stack:
        manager = await stack.enter_async_context(LifespanManager(app, startup_timeout=60))
        platform: Platform = app.state.platform
        await wait_started(platform)
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(
                        app=manager.app, client=(f"10.1.{i // 250}.{i % 250}", 4000)
                    ),
                    base_url="http://test",
                )
            )
            for i in range(1000)
        ]
        yield platform, manager.app, clients


async def test_ten_thousand_random_keys_from_many_addresses_barely_reach_the_database(
    flooded: tuple[Platform, Any, list[httpx.AsyncClient]],
) -> None:
    platform, _, clients = flooded
    rng = random.Random(7)
    keys = [generate_key() for _ in range(10_000)]

    async def attempt(i: int) -> int:
        client = clients[rng.randrange(len(clients))]
        headers = {"X-API-Key": keys[i]}
        if i % 2:  # the fast path and a routed request alike
            return (await client.post("/api/ml/predict", json=PREDICT, headers=headers)).status_code
        return (await client.get("/api/ml/models", headers=headers)).status_code

    began = time.monotonic()
    with key_lookups(platform) as statements:
        statuses: list[int] = []
        for start in range(0, len(keys), 200):
            statuses += await asyncio.gather(*(attempt(i) for i in range(start, start + 200)))
    elapsed = time.monotonic() - began
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) > 9_000  # at most 30 failures a minute per address: few are over it
    budget = LOOKUPS_PER_SECOND * elapsed + LOOKUPS_PER_SECOND  # the rate, plus one burst
    assert len(statements) <= budget, (len(statements), elapsed)
    assert platform.auth.unknown.skipped >= 10_000 - budget


async def test_an_unknown_key_is_looked_up_once(
    flooded: tuple[Platform, Any, list[httpx.AsyncClient]],
) -> None:
    platform, _, clients = flooded
    key = generate_key()
    with key_lookups(platform) as statements:
        # concurrent first attempts share one query; later ones are answered from memory
        first = await asyncio.gather(
            *(c.post("/api/ml/predict", json=PREDICT, headers={"X-API-Key": key}) for c in clients[:50])
        )
        later = [await c.get("/api/ml/models", headers={"X-API-Key": key}) for c in clients[50:250]]
    assert {r.status_code for r in first + later} == {401}
    assert all(r.json()["error"]["message"] == "invalid API key" for r in first + later)
    assert len(statements) == 1


async def test_an_address_over_its_failure_limit_is_refused_before_any_lookup(make_app: AppFactory) -> None:
    client, platform = await make_app(key=None, security={"rate-limit": {"failed-auth": "5/minute"}})
    tried = [await client.get("/api/ml/models", headers={"X-API-Key": generate_key()}) for _ in range(5)]
    assert [r.status_code for r in tried] == [401] * 5
    with key_lookups(platform) as statements:
        for _ in range(50):
            refused = await client.post(
                "/api/ml/predict", json=PREDICT, headers={"X-API-Key": generate_key()}
            )
            assert refused.status_code == 429 and refused.headers["retry-after"]
            missing = await client.get("/api/ml/models")
            assert missing.status_code == 429
    assert statements == []
    # a key the instance holds still works from that address (a shared NAT)
    assert (await client.get("/api/ml/models", headers={"X-API-Key": ADMIN_KEY})).status_code == 200


async def test_a_revoked_key_is_remembered_as_revoked(make_app: AppFactory) -> None:
    client, platform = await make_app()
    created = await client.post("/api/admin/api-keys", json={"name": "r", "role": "viewer", "owner": "o"})
    key, key_id = created.json()["key"], created.json()["id"]
    assert (await client.delete(f"/api/admin/api-keys/{key_id}")).status_code in (200, 204)
    with key_lookups(platform) as statements:
        for _ in range(20):
            refused = await client.get("/api/ml/models", headers={"X-API-Key": key})
            assert refused.status_code == 401 and refused.json()["error"]["message"] == "API key revoked"
    assert len(statements) == 1


async def test_a_created_key_ends_what_the_other_instance_remembered(
    postgres_url: str, redis_url: str, make_app: AppFactory
) -> None:
    """The key-created event makes every instance forget the keys it found unknown."""
    (first, one), (_, other) = await two_instances(make_app, postgres_url, redis_url)
    key = generate_key()
    assert (await first.get("/api/ml/models", headers={"X-API-Key": key})).status_code == 401
    # The key appears in the database without an announcement: the first instance keeps its answer ...
    await other.auth.store.create(
        NewKey(
            key_hash=hash_key(key),
            display_prefix=key[:12],
            name="late",
            role=Role.VIEWER,
            owner="ops",
            rate_limit=None,
            created_at=datetime.now(UTC),
            expires_at=None,
        )
    )
    assert (await first.get("/api/ml/models", headers={"X-API-Key": key})).status_code == 401
    # ... until a key is announced, from any instance.
    await other.auth.feed.announce(b"changed")
    async with asyncio.timeout(5):
        while (await first.get("/api/ml/models", headers={"X-API-Key": key})).status_code != 200:
            await asyncio.sleep(0.05)
    assert hash_key(key) not in one.auth.unknown.unknown


@pytest.mark.parametrize("order", ["valid first", "valid second"])
async def test_a_repeated_key_header_means_the_same_on_every_route(make_app: AppFactory, order: str) -> None:
    client, _ = await make_app(key=None)
    pair = [ADMIN_KEY, generate_key()]
    headers = [("X-API-Key", k) for k in (pair if order == "valid first" else pair[::-1])]
    expected = 401 if order == "valid second" else None
    answers = [
        await client.post("/api/ml/predict", json=PREDICT, headers=headers),  # the fast path
        await client.post(
            "/api/ml/predict/batch", json={"model": "m", "instances": [[1.0]]}, headers=headers
        ),
        await client.get("/api/ml/models", headers=headers),  # a routed request
        await client.get("/v2/models/m", headers=headers),
    ]
    for response in answers:
        if expected is None:
            assert response.status_code not in (401, 403, 429), response.text
        else:
            assert response.status_code == expected, response.text
