"""Apps built through `create_app`, driven in-process over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from mlplatform import db
from mlplatform.app import create_app
from mlplatform.config import load_settings
from mlplatform.platform import Platform
from mlplatform.settings import DatabaseSettings
from mlplatform.stores.jobs.dask import NO_WORKERS_TIMEOUT

AppFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Platform]]]
ADMIN_KEY = "mlp_test-bootstrap-admin-key-0123456789"


def settings_for(tmp_path: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/app.db"},
        "storage": {"url": f"file://{tmp_path}/artifacts"},
        "security": {"api-keys": {"bootstrap-admin-key": ADMIN_KEY}},
    }
    for section, value in overrides.items():
        base[section] = _merged(base.get(section, {}), value)
    return load_settings(environ={}, config_dir=tmp_path / "no-config", overrides=base)


def _merged(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in extra.items()}}
    return extra


async def wait_started(platform: Platform, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not platform.lifecycle.started:
            await asyncio.sleep(0.02)


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[AppFactory]:
    """`await make_app(cache={...}, ...)` → (client, platform) of a started app; all closed at the end."""
    async with AsyncExitStack() as stack:

        async def factory(
            wait: bool = True, key: str | None = ADMIN_KEY, **overrides: Any
        ) -> tuple[httpx.AsyncClient, Platform]:
            app: FastAPI = create_app(settings_for(tmp_path, **overrides))
            manager = await stack.enter_async_context(LifespanManager(app, startup_timeout=60))
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
                    base_url="http://test",
                    headers={"X-API-Key": key} if key else {},
                )
            )
            platform: Platform = app.state.platform
            if wait:
                await wait_started(platform)
            return client, platform

        yield factory


@pytest.fixture
async def client(make_app: AppFactory) -> httpx.AsyncClient:
    client, _ = await make_app()
    return client


@pytest.fixture(params=["embedded", "production"])
async def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """App overrides for SQLite + memory + files, or PostgreSQL + Redis + SeaweedFS S3 (migrated first)."""
    if request.param == "embedded":
        return {}
    postgres_url = request.getfixturevalue("postgres_url")
    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=postgres_url))
    return {
        "database": {"url": postgres_url},
        "cache": {"url": request.getfixturevalue("redis_url"), "timeout-ms": 500},
        "storage": {"url": request.getfixturevalue("s3_url"), **request.getfixturevalue("s3_credentials")},
    }


async def two_instances(
    make_app: AppFactory, database_url: str, cache_url: str, **overrides: Any
) -> tuple[tuple[httpx.AsyncClient, Platform], tuple[httpx.AsyncClient, Platform]]:
    """Two started apps sharing one (migrated) database and one cache; the artifact folder is shared too.
    `overrides` are further settings sections, the same for both."""
    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=database_url))
    shared = {"database": {"url": database_url}, "cache": {"url": cache_url, "timeout-ms": 500}, **overrides}
    return await make_app(**shared), await make_app(**shared)


@contextmanager
def local_cluster(workers: int = 2) -> Iterator[Any]:
    """A Dask LocalCluster for `jobs.scheduler` as the embedded one is made: worker processes of one thread
    each on 127.0.0.1, and a scheduler that fails tasks pinned to a worker that died."""
    import dask
    from distributed import LocalCluster

    with (
        dask.config.set({"distributed.scheduler.no-workers-timeout": NO_WORKERS_TIMEOUT}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
    ):
        yield cluster
