"""A dead Redis or S3 degrades the service (component DOWN), never breaks it; recovery needs no restart."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.conftest import AppFactory
from tests.services import RedisServer, free_port


async def component(client: httpx.AsyncClient, name: str) -> str:
    body = (await client.get("/actuator/health")).json()
    return str(body["components"][name]["status"])


async def test_redis_stopped_and_started_again(private_redis: RedisServer, make_app: AppFactory) -> None:
    client, _ = await make_app(cache={"url": private_redis.url, "timeout-ms": 200})
    assert await component(client, "cache") == "UP"

    private_redis.stop()
    health = await client.get("/actuator/health")
    assert health.status_code == 200
    assert health.json()["status"] == "DEGRADED"
    assert health.json()["components"]["cache"]["status"] == "DOWN"
    assert health.json()["components"]["db"]["status"] == "UP"
    readiness = await client.get("/actuator/health/readiness")
    assert readiness.status_code == 200  # the default readiness group is the database only
    assert (await client.get("/actuator/health/liveness")).status_code == 200
    assert (await client.get("/actuator/info")).status_code == 200

    private_redis.start()
    async with asyncio.timeout(15):
        while await component(client, "cache") != "UP":
            await asyncio.sleep(0.1)
    assert (await client.get("/actuator/health")).json()["status"] == "UP"


async def test_readiness_can_include_the_cache(private_redis: RedisServer, make_app: AppFactory) -> None:
    client, _ = await make_app(
        cache={"url": private_redis.url, "timeout-ms": 200},
        management={"health": {"readiness-include": ["db", "cache"]}},
    )
    assert (await client.get("/actuator/health/readiness")).status_code == 200
    private_redis.stop()
    readiness = await client.get("/actuator/health/readiness")
    assert readiness.status_code == 503
    assert "cache" in readiness.json()["details"]


async def test_paused_redis_costs_a_bounded_health_check(
    private_redis: RedisServer, make_app: AppFactory
) -> None:
    client, _ = await make_app(cache={"url": private_redis.url, "timeout-ms": 100})
    private_redis.pause()
    try:
        async with asyncio.timeout(10):
            assert await component(client, "cache") == "DOWN"
    finally:
        private_redis.resume()


async def test_unreachable_s3_is_a_degraded_storage_component(
    s3_credentials: dict[str, str],
    make_app: AppFactory,
) -> None:
    url = f"s3://nowhere?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    client, _ = await make_app(storage={"url": url, **s3_credentials})
    health = await client.get("/actuator/health")
    assert health.status_code == 200
    assert health.json()["status"] == "DEGRADED"
    assert health.json()["components"]["storage"]["status"] == "DOWN"


def component_up(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("ml_health_component_up{") and f'component="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_component_gauge_follows_redis_without_health_calls(
    private_redis: RedisServer, make_app: AppFactory
) -> None:
    """The alert rules read ml_health_component_up: the app refreshes it on its own, nobody calls health."""
    client, _ = await make_app(
        cache={"url": private_redis.url, "timeout-ms": 200},
        management={"health": {"refresh-seconds": 0.2}},
    )

    async def cache_up_becomes(expected: float) -> None:
        async with asyncio.timeout(15):
            while component_up((await client.get("/actuator/prometheus")).text, "cache") != expected:
                await asyncio.sleep(0.05)

    await cache_up_becomes(1.0)
    private_redis.stop()
    await cache_up_becomes(0.0)
    private_redis.start()
    await cache_up_becomes(1.0)
