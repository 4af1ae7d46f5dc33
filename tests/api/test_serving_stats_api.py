"""`GET /api/ml/models/{name}/serving-stats`: each process's counters saved per minute by its loop, added up
over instances (two apps on one PostgreSQL), errors counted, old minutes pruned, bad input refused."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplatform.clock import utcnow
from mlplatform.platform import Platform
from mlplatform.serving.stats import minute_of
from mlplatform.serving.stats_store import Counts
from tests.api.conftest import AppFactory, two_instances
from tests.api.test_serving_api import predict, registered, slow_down
from tests.api.test_ui import create_key

FAST_FLUSH = {"serving": {"stats": {"flush-seconds": 0.1}}}


async def stats(client: httpx.AsyncClient, model: str = "m", **params: Any) -> dict[str, Any]:
    response = await client.get(f"/api/ml/models/{model}/serving-stats", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def predictions(client: httpx.AsyncClient, rows: Any, n: int, model: str = "m") -> None:
    for i in range(n):
        assert (await predict(client, model, rows[i % len(rows)].tolist())).status_code == 200


async def saved(platform: Platform, model: str = "m") -> Counts:
    now = utcnow()
    minutes = await platform.serving_stats.store.periods(model, now - timedelta(hours=1), now + timedelta(1))
    return sum(minutes.values(), Counts())


async def test_counts_requests_errors_and_percentiles_live_and_once_saved(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml={"predictions": {"timeout-ms": 100}})
    ref = await registered(client, tmp_path)
    await predictions(client, ref.X, 5)
    batch = await client.post("/api/ml/predict/batch", json={"model": "m", "instances": ref.X[:30].tolist()})
    assert batch.status_code == 200
    live = await stats(client)  # not saved yet: this process's own counts are read as they are
    assert live["model"] == "m" and live["step_seconds"] == 60 and live["instances"] == 1
    totals = live["totals"]
    assert (totals["predictions"], totals["requests"], totals["errors"]) == (35, 6, 0)
    assert totals["error_rate"] == 0.0
    latency = totals["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] and latency["mean"] > 0
    assert sum(p["predictions"] for p in live["points"]) == 35
    assert 60 <= len(live["points"]) <= 61 and live["points"][-1]["predictions"] == 35
    assert all(p["p50"] is None for p in live["points"][:-1])  # no traffic: no percentile, not a zero
    week = await stats(client, window="7d")  # hourly steps: read from the hour rows
    assert week["step_seconds"] == 3600 and week["totals"] == totals
    for window in ("15m", "24h", "7d"):  # whole hours from hour rows, the edges from minute rows
        _, _, overview = await platform.serving_stats.overview(models=["m", "other"], window=window)
        assert list(overview) == ["m"] and overview["m"].model_dump() == totals, window

    slow_down(platform, "m")  # a model too slow for the deadline: 504, counted as an error
    assert (await predict(client, "m", ref.X[7].tolist())).status_code == 504
    await platform.serving_stats.flush()
    assert (await saved(platform)).errors == 1 and (await saved(platform)).predictions == 35
    after = (await stats(client))["totals"]
    assert (after["predictions"], after["requests"], after["errors"]) == (35, 6, 1)  # saved: counted once
    assert (await stats(client, window="7d"))["totals"] == after
    _, _, overview = await platform.serving_stats.overview(models=["m"], window="24h")
    assert overview["m"].model_dump() == after
    assert after["error_rate"] == pytest.approx(1 / 7)


async def test_the_loop_saves_every_few_seconds_and_prunes_past_the_retention(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml={"serving": {"stats": {"flush-seconds": 0.1, "retention": "1d"}}})
    service = platform.serving_stats
    old = minute_of(utcnow() - timedelta(days=2))
    await service.store.save("gone-instance", {("m", old): Counts(predictions=9)}, {}, at=old)
    ref = await registered(client, tmp_path)
    await predictions(client, ref.X, 4)
    async with asyncio.timeout(10):
        while (await saved(platform)).predictions != 4:
            await asyncio.sleep(0.05)
        while await service.store.periods("m", old, old + timedelta(minutes=1)):
            await asyncio.sleep(0.05)
    await predictions(client, ref.X, 2)
    await service.stop()  # stopping saves what was counted since the last round
    assert (await saved(platform)).predictions == 6
    assert (await stats(client, window="30m"))["totals"]["predictions"] == 6


async def test_two_instances_add_up(
    make_app: AppFactory, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    (one, first), (two, second) = await two_instances(make_app, postgres_url, redis_url, ml=FAST_FLUSH)
    assert first.serving_stats.instance != second.serving_stats.instance
    ref = await registered(one, tmp_path)
    await predictions(one, ref.X, 3)
    async with asyncio.timeout(10):
        while "m" not in second.registry.watcher.snapshot.models:
            await asyncio.sleep(0.05)
    await predictions(two, ref.X, 5)
    async with asyncio.timeout(10):
        while (await saved(first)).predictions != 8:  # both loops saved
            await asyncio.sleep(0.05)
    for client in (one, two):
        found = await stats(client, window="15m")
        assert found["instances"] == 2 and found["totals"]["predictions"] == 8
        assert found["totals"]["requests"] == 8 and found["totals"]["errors"] == 0
    await predictions(one, ref.X, 1)  # the first instance sees its own new count at once
    assert (await stats(one))["totals"]["predictions"] == 9


async def test_viewers_read_it_and_bad_input_is_refused(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    await registered(client, tmp_path)
    viewer = await create_key(client, "viewer")
    as_viewer = await client.get("/api/ml/models/m/serving-stats", headers={"X-API-Key": viewer["key"]})
    assert as_viewer.status_code == 200 and as_viewer.json()["totals"]["predictions"] == 0
    assert as_viewer.json()["totals"]["latency_ms"]["p99"] is None
    day = await stats(client, window="24h")
    assert day["step_seconds"] == 600 and len(day["points"]) in (144, 145)
    nobody = await client.get("/api/ml/models/nobody/serving-stats")
    assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "not_found"
    bad = await client.get("/api/ml/models/m/serving-stats", params={"window": "forever"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "window"
    anonymous = await client.get("/api/ml/models/m/serving-stats", headers={"X-API-Key": ""})
    assert anonymous.status_code == 401


async def test_a_past_window_of_hourly_steps_ends_with_its_last_hour(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    await registered(client, tmp_path)
    to = (utcnow() - timedelta(days=1)).replace(minute=20, second=0, microsecond=0)
    found = await stats(client, **{"from": (to - timedelta(days=7)).isoformat(), "to": to.isoformat()})
    assert found["step_seconds"] == 3600
    end = datetime.fromisoformat(found["end"].replace("Z", "+00:00"))
    assert end == to.replace(minute=0) + timedelta(hours=1)  # the hour that holds `to`, whole
