"""What the console benchmarks (ui.py, serving_stats.py) share: an app on the embedded default in a folder,
its admin API client, a small model to register, a signed-in browser session, and the page timing table.

Everything goes through the ASGI interface: the server's whole work for a request (pipeline, session,
services, database, template), no network.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import skops.io
from asgi_lifespan import LifespanManager
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlplatform.app import create_app  # noqa: E402
from mlplatform.config import load_settings  # noqa: E402

ADMIN_KEY = "mlp_benchmark-admin-key-0123456789abcdef"
FEATURES = [f"f{i}" for i in range(8)]
GOAL_MS = 100.0
WARM_UP_RUNS = 3  # the first few requests of a page warm caches and templates: not counted
Timings = list[tuple[str, list[float], int]]  # page label, milliseconds per run, HTML bytes


@dataclass
class ConsoleApp:
    app: Any
    transport: httpx.ASGITransport
    api: httpx.AsyncClient  # the admin key's API client
    rows: np.ndarray  # FEATURES-wide rows around zero
    artifact: bytes  # a logistic regression on `rows`, skops

    async def register(self, name: str, metadata: dict[str, object] | None = None) -> None:
        files = {"file": ("model.skops", self.artifact, "application/octet-stream")}
        body = {"feature_names": FEATURES, **(metadata or {})}
        response = await self.api.post(
            f"/api/ml/models/{name}/versions", files=files, data={"metadata": orjson.dumps(body).decode()}
        )
        response.raise_for_status()


@asynccontextmanager
async def console_app(folder: Path) -> AsyncIterator[ConsoleApp]:
    """`create_app` on SQLite and a local folder in `folder`, started, with the admin key's API client."""
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
    rows = np.random.default_rng(0).normal(size=(500, len(FEATURES)))
    path = folder / "model.skops"
    skops.io.dump(LogisticRegression().fit(rows, (rows[:, 0] > 0).astype(int)), path)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers={"X-API-Key": ADMIN_KEY}, timeout=60
        ) as api:
            while (await api.get("/api/ml/models")).status_code == 503:
                await asyncio.sleep(0.1)
            yield ConsoleApp(app, transport, api, rows, path.read_bytes())


@asynccontextmanager
async def signed_in(console: ConsoleApp) -> AsyncIterator[httpx.AsyncClient]:
    """A browser's session: signed in with the admin key through the sign-in form."""
    async with httpx.AsyncClient(transport=console.transport, base_url="http://bench") as browser:
        form = await browser.get("/ui/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = await browser.post("/ui/login", data={"key": ADMIN_KEY, "csrf": token.group(1)})
        assert signed.status_code == 303, signed.text
        yield browser


async def time_pages(browser: httpx.AsyncClient, pages: Sequence[tuple[str, str]], runs: int) -> Timings:
    """Each page `runs` times after WARM_UP_RUNS; a path ending in `#htmx` is asked as htmx asks (its
    live part only)."""
    results = []
    for label, page in pages:
        times, size = [], 0
        live = {"HX-Request": "true"} if page.endswith("#htmx") else {}
        for _ in range(runs + WARM_UP_RUNS):
            began = time.perf_counter()
            response = await browser.get(page.removesuffix("#htmx"), headers=live)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (page, response.status_code)
            size = len(response.content)
        results.append((label, times[WARM_UP_RUNS:], size))
    return results


def print_table(title: str, results: Timings) -> None:
    print(f"\n{title}\n")
    print(f"| {'page':<30} | median ms | p95 ms | max ms | HTML bytes | under {GOAL_MS:.0f} ms |")
    print(f"|{'-' * 32}|-----------|--------|--------|------------|--------------|")
    for label, times, size in results:
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        verdict = "yes" if median < GOAL_MS else "NO"
        print(
            f"| {label:<30} | {median:9.1f} | {p95:6.1f} | {max(times):6.1f} | {size:10,} | {verdict:>12} |"
        )
