"""A fresh development install hands over one admin key on its first start, shown once; prod never does."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from mlplatform.app import create_app
from mlplatform.auth.keys import hash_key
from mlplatform.logging import configure_logging
from mlplatform.platform import Platform
from mlplatform.settings import LoggingSettings, Settings
from tests.api.conftest import settings_for, wait_started

KEY = re.compile(r"mlp_[A-Za-z0-9_-]{43}")
NO_BOOTSTRAP_KEY = {"api-keys": {"bootstrap-admin-key": None}}


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Platform]]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        platform: Platform = app.state.platform
        await wait_started(platform)
        yield client, platform


async def api_key_rows(platform: Platform) -> list[Any]:
    async with platform.database.session() as session:
        return list((await session.execute(text("SELECT * FROM api_keys"))).all())


async def test_a_fresh_development_database_gets_one_admin_key_shown_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, security=NO_BOOTSTRAP_KEY)
    assert settings.profile == "default"
    logs = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=logs)
    try:
        async with started(settings) as (client, platform):
            printed = capsys.readouterr().err
            keys = set(KEY.findall(printed))
            assert len(keys) == 1, printed
            key = keys.pop()
            assert "shown only this once and stored only as a hash" in printed
            assert f"export MLPLATFORM_API_KEY={key}" in printed
            assert "export MLPLATFORM_URL=http://127.0.0.1:8080" in printed
            assert "mlplatform models list" in printed
            assert f'curl -H "X-API-Key: {key}" http://127.0.0.1:8080/api/ml/models' in printed

            assert (await client.get("/api/ml/models")).status_code == 401
            answer = await client.get("/api/ml/models", headers={"X-API-Key": key})
            assert answer.status_code == 200, answer.text
            [stored] = await platform.auth.list_keys()
            assert (stored.role.value, stored.owner, stored.name) == ("admin", "admin", "first admin key")
            rows = repr(await api_key_rows(platform))
            assert hash_key(key) in rows
            assert key not in rows and key[12:] not in rows
    finally:
        configure_logging(LoggingSettings())
    assert f'"key_id":"{stored.id}"' in logs.getvalue() and "first admin key created" in logs.getvalue()
    assert key not in logs.getvalue() and key[12:] not in logs.getvalue()

    async with started(settings) as (client, platform):
        assert "mlp_" not in capsys.readouterr().err
        assert [k.id for k in await platform.auth.list_keys()] == [stored.id]
        assert (await client.get("/api/ml/models", headers={"X-API-Key": key})).status_code == 200


@pytest.mark.parametrize(
    ("profile", "security"),
    [
        ("prod", NO_BOOTSTRAP_KEY),
        ("default", {}),  # a bootstrap admin key is configured
        ("default", {"api-keys": {"bootstrap-admin-key": None, "enabled": False}}),
        ("default", {"api-keys": {"bootstrap-admin-key": None, "create-first-admin-key": False}}),
    ],
    ids=["prod-profile", "bootstrap-key", "keys-disabled", "turned-off"],
)
async def test_no_first_admin_key_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], profile: str, security: dict[str, Any]
) -> None:
    settings = settings_for(tmp_path, security=security).model_copy(update={"profile": profile})
    async with started(settings) as (_, platform):
        assert "mlp_" not in capsys.readouterr().err
        assert await api_key_rows(platform) == []
