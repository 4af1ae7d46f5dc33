"""Serving stats at their busiest: the serving pages' server time when every model served every minute.

    python benchmarks/serving_stats.py [--models 100] [--instances 3] [--runs 20]

Builds an app with `create_app` on the embedded default (SQLite) in a temporary folder, registers `--models`
models, then saves, as `--instances` server processes would have, a row for every model and minute of the
last day (and of the last week for the first model), with the hour rows the loop writes beside them. Signs in
and times the serving pages through the ASGI interface for windows of an hour, a day and a week. The goal is a
median under 100 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import skops.io
from asgi_lifespan import LifespanManager
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlplatform.app import create_app  # noqa: E402
from mlplatform.clock import utcnow  # noqa: E402
from mlplatform.config import load_settings  # noqa: E402
from mlplatform.platform import Platform  # noqa: E402
from mlplatform.serving.stats import hour_of, minute_of  # noqa: E402
from mlplatform.serving.stats_store import Counts  # noqa: E402

ADMIN_KEY = "mlp_benchmark-admin-key-0123456789abcdef"
FEATURES = [f"f{i}" for i in range(8)]
GOAL_MS = 100.0


async def seed(platform: Platform, models: list[str], instances: int) -> int:
    """Every model's minutes of the last day (the first model's of the last week), per instance."""
    now = utcnow()
    counts = Counts(600, 1, 420.0, (5, 40, 300, 200, 50, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    rows = 0
    for instance in range(instances):
        for i, model in enumerate(models):
            minutes = 7 * 1440 if i == 0 else 1440
            by_minute = {(model, minute_of(now) - timedelta(minutes=m)): counts for m in range(minutes)}
            by_hour = {(model, hour_of(now) - timedelta(hours=h)): counts for h in range(minutes // 60 + 1)}
            await platform.serving_stats.store.save(f"bench-{instance}", by_minute, by_hour, at=now)
            rows += len(by_minute) + len(by_hour)
    return rows


async def run(models: int, instances: int, runs: int, folder: Path) -> list[tuple[str, list[float], int]]:
    settings = load_settings(
        environ={},
        config_dir=folder / "no-config",
        overrides={
            "database": {"url": f"sqlite+aiosqlite:///{folder}/app.db"},
            "storage": {"url": f"file://{folder}/artifacts"},
            "security": {"api-keys": {"bootstrap-admin-key": ADMIN_KEY}, "rate-limit": {"enabled": False}},
        },
    )
    app = create_app(settings)
    x = np.random.default_rng(0).normal(size=(500, len(FEATURES)))
    path = folder / "model.skops"
    skops.io.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), path)
    names = [f"model-{i:03d}" for i in range(models)]
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers={"X-API-Key": ADMIN_KEY}, timeout=60
        ) as api:
            while (await api.get("/api/ml/models")).status_code == 503:
                await asyncio.sleep(0.1)
            metadata = orjson.dumps({"feature_names": FEATURES}).decode()
            for name in names:
                files = {"file": ("model.skops", path.read_bytes(), "application/octet-stream")}
                created = await api.post(
                    f"/api/ml/models/{name}/versions", files=files, data={"metadata": metadata}
                )
                created.raise_for_status()
            started = time.perf_counter()
            rows = await seed(app.state.platform, names, instances)
            print(f"saved {rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as browser:
            form = await browser.get("/ui/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            signed = await browser.post("/ui/login", data={"key": ADMIN_KEY, "csrf": token.group(1)})
            assert signed.status_code == 303, signed.text
            results = []
            for window in ("1h", "24h", "7d"):
                for label, page in (
                    (f"Serving ({models} rows), {window}", f"/ui/serving?window={window}"),
                    (f"Serving, a model, {window}", f"/ui/serving/model-000?window={window}"),
                ):
                    times, size = [], 0
                    for _ in range(runs + 3):
                        began = time.perf_counter()
                        response = await browser.get(page)
                        times.append((time.perf_counter() - began) * 1000)
                        assert response.status_code == 200, (page, response.status_code)
                        size = len(response.content)
                    results.append((label, times[3:], size))
            return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplatform-serving-bench-") as folder:
        results = asyncio.run(run(args.models, args.instances, args.runs, Path(folder)))
    print(
        f"\nServing pages, embedded default, {args.models} models each served every minute by "
        f"{args.instances} instances, {args.runs} runs each (server time)\n"
    )
    print(f"| {'page':<30} | median ms | p95 ms | HTML bytes | under {GOAL_MS:.0f} ms |")
    print(f"|{'-' * 32}|-----------|--------|------------|--------------|")
    for label, times, size in results:
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        verdict = "yes" if median < GOAL_MS else "NO"
        print(f"| {label:<30} | {median:9.1f} | {p95:6.1f} | {size:10,} | {verdict:>12} |")


if __name__ == "__main__":
    main()
