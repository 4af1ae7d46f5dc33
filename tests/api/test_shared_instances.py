"""Two instances sharing PostgreSQL and Redis: keys and rate limits hold across them; Redis loss degrades."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.conftest import ADMIN_KEY, AppFactory, two_instances
from tests.services import RedisServer


async def new_key(client: httpx.AsyncClient, **extra: str) -> str:
    body = {"name": "shared", "role": "viewer", "owner": "ops", **extra}
    response = await client.post("/api/admin/api-keys", json=body, headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def info(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/actuator/info", headers={"X-API-Key": key})).status_code


async def test_rate_limit_is_shared_by_every_instance(
    postgres_url: str, redis_url: str, make_app: AppFactory
) -> None:
    (first, _), (second, _) = await two_instances(make_app, postgres_url, redis_url)
    key = await new_key(first, rate_limit="4/minute")
    statuses = [
        await info(first, key),
        await info(second, key),
        await info(first, key),
        await info(second, key),
    ]
    assert statuses == [200, 200, 200, 200]
    assert await info(first, key) == 429
    assert await info(second, key) == 429


async def test_a_key_revoked_on_one_instance_is_refused_by_the_other(
    postgres_url: str, redis_url: str, make_app: AppFactory
) -> None:
    (first, _), (second, _) = await two_instances(make_app, postgres_url, redis_url)
    key = await new_key(first)
    assert await info(second, key) == 200
    key_id = (await first.get("/api/admin/api-keys", headers={"X-API-Key": ADMIN_KEY})).json()[0]["id"]
    assert (
        await first.delete(f"/api/admin/api-keys/{key_id}", headers={"X-API-Key": ADMIN_KEY})
    ).status_code == 200
    async with asyncio.timeout(5):  # the change event reaches the other instance
        while await info(second, key) != 401:
            await asyncio.sleep(0.05)


async def test_limits_still_hold_in_memory_while_redis_is_down(
    postgres_url: str, private_redis: RedisServer, make_app: AppFactory
) -> None:
    (first, _), _ = await two_instances(make_app, postgres_url, private_redis.url)
    key = await new_key(first, rate_limit="3/minute")
    private_redis.stop()
    statuses = [await info(first, key) for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    health = (await first.get("/actuator/health")).json()
    assert health["components"]["cache"]["status"] == "DOWN"
