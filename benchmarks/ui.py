"""Web console benchmark: each page's server time on the embedded default with 100 registered models.

    python benchmarks/ui.py [--models 100] [--runs 50]

Builds an app with `create_app` on the embedded default (SQLite, in-process cache, files) in a temporary
folder, registers `--models` models (the first with 10 versions, stages, aliases, a reference sample and some
logged predictions), signs in through the sign-in form, then times each page through the ASGI interface: the
server's whole work for the request (pipeline, session, services, database, template), no network. Prints a
table; the goal is a median under 100 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
from console_app import FEATURES, console_app, print_table, signed_in, time_pages

from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.platform import Platform
from mlplatform.stores.predictions import PredictionRecord


async def run(models: int, runs: int, folder: Path) -> list[tuple[str, list[float], int]]:
    async with console_app(folder) as console:
        api, x = console.api, console.rows
        started = time.perf_counter()
        first = {"metrics": {"auc": 0.93, "f1": 0.88}}
        await console.register("model-000", {**first, "reference_sample": x[:300].tolist()})
        for version in range(2, 11):
            await console.register("model-000", {**first, "parent": f"model-000/{version - 1}"})
        for i in range(1, models):
            await console.register(f"model-{i:03d}")
        await api.post("/api/ml/models/model-000/versions/9/stage", json={"stage": "staging"})
        await api.post("/api/ml/models/model-000/versions/8/stage", json={"stage": "production"})
        await api.put("/api/ml/models/model-000/aliases/champion", json={"version": 8})
        for i in range(50):
            body = {"model": f"model-{i % 10:03d}", "features": x[i].tolist()}
            (await api.post("/api/ml/predict", json=body)).raise_for_status()
        print(f"registered {models} models in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        experiment = await experiment_with_traffic(api, x)  # first: it waits for its 200 logged answers
        await prepare_monitoring(api, console.app.state.platform, x)
        job = await search_job(api, x)
        async with signed_in(console) as browser:
            await asyncio.sleep(0.5)  # let the prediction log writer flush
            pages = [
                ("Models (100 rows)", "/ui/models"),
                ("Models, search", "/ui/models?q=model-00"),
                ("A model (10 versions)", "/ui/models/model-000"),
                ("A version (reference sample)", "/ui/models/model-000/versions/1"),
                ("Experiments", "/ui/experiments"),
                ("An experiment (200 requests)", f"/ui/experiments/{experiment}"),
                ("API keys", "/ui/api-keys"),
                ("Upload a model (form)", "/ui/upload/model"),
                ("A search job (8 trials)", f"/ui/jobs/{job}"),
                ("Serving (100 rows)", "/ui/serving"),
                ("Serving, a model (1h)", "/ui/serving/model-000"),
                ("Serving, a model (7d)", "/ui/serving/model-000?window=7d"),
                ("Serving, a model (live part)", "/ui/serving/model-000#htmx"),
            ]
            await console.app.state.platform.serving_stats.flush()  # the serving pages read saved minutes too
            return await time_pages(browser, pages + MONITORING_PAGES, runs)


async def experiment_with_traffic(api: httpx.AsyncClient, x: np.ndarray) -> str:
    """An A/B test of model-000 v8 against v9 with 200 predictions, all labelled."""
    body = {
        "name": "v9 against v8",
        "model": "model-000",
        "type": "ab",
        "variants": [
            {"name": "a", "version": "8", "weight": 50},
            {"name": "b", "version": "9", "weight": 50},
        ],
        "metric": "accuracy",
        "min_samples": 50,
    }
    created = await api.post("/api/ml/experiments", json=body)
    created.raise_for_status()
    feedback = []
    for i in range(200):
        request = {"model": "model-000", "features": x[i].tolist(), "request_id": f"bench-{i}"}
        answer = (await api.post("/api/ml/predict", json=request)).raise_for_status().json()
        feedback.append({"prediction_id": answer["prediction_id"], "actual": int(x[i, 0] > 0.1)})
    while (
        len((await api.get("/api/ml/predictions", params={"model": "model-000", "limit": 1000})).json()) < 205
    ):
        await asyncio.sleep(0.1)  # the log is written behind the answers
    (await api.post("/api/ml/feedback", json=feedback)).raise_for_status()
    return str(created.json()["id"])


async def search_job(api: httpx.AsyncClient, x: np.ndarray) -> str:
    """A finished grid search of 8 trials (on the embedded Dask cluster, started by this first job)."""
    rows = "\n".join(",".join(f"{v:.5f}" for v in row) + f",{int(row[0] > 0)}" for row in x)
    content = (",".join(FEATURES) + ",label\n" + rows + "\n").encode()
    dataset = await api.post(
        "/api/ml/datasets", files={"file": ("bench.csv", content)}, data={"name": "bench"}
    )
    dataset.raise_for_status()
    body = {
        "model": "bench-search",
        "dataset": dataset.json()["id"],
        "target": "label",
        "algorithm": "logistic_regression",
        "search": {"strategy": "grid", "space": {"C": {"choice": [0.001, 0.01, 0.1, 1, 3, 10, 30, 100]}}},
    }
    job = (await api.post("/api/ml/training-jobs", json=body)).raise_for_status().json()
    async with asyncio.timeout(300):
        while (found := (await api.get(f"/api/ml/training-jobs/{job['id']}")).json())["state"] in (
            "queued",
            "running",
        ):
            await asyncio.sleep(0.2)
    assert found["state"] == "succeeded", found
    return str(job["id"])


MONITORING_PAGES = [
    ("Monitoring (100 models)", "/ui/monitoring"),
    ("A model's monitoring, 24 h", "/ui/models/model-000/monitoring"),
    ("A model's monitoring, 7 d", "/ui/models/model-000/monitoring?window=7d"),
    ("A model's monitoring, 30 d", "/ui/models/model-000/monitoring?window=30d"),
    ("Alerts", "/ui/alerts"),
]


async def prepare_monitoring(api: httpx.AsyncClient, platform: Platform, x: np.ndarray) -> None:
    """Data for the monitoring pages: 2,000 predictions of model-000 (v1, which kept the reference
    sample) spread over the last 30 days, 1,500 of them labelled (a quarter wrongly, so the accuracy rule
    fires), a drift report, and a check run."""
    entry = platform.registry.resolve("model-000/1")
    now = utcnow()
    rng = np.random.default_rng(2)
    rows = x[rng.integers(0, len(x), size=2000)]
    records = [
        PredictionRecord(
            id=new_id(),
            model="model-000",
            version=entry.id,
            variant=None,
            request_id=None,
            inputs=row.tolist(),
            prediction=int(row[0] > 0),
            probabilities=None,
            confidence=None,
            latency_ms=2.0,
            cached=False,
            created_at=now - timedelta(minutes=21.6 * i),
        )
        for i, row in enumerate(rows)
    ]
    await asyncio.to_thread(platform.serving.logs.store.append, records)
    feedback = [
        {"prediction_id": r.id, "actual": r.prediction if i % 4 else 1 - r.prediction}
        for i, r in enumerate(records[:1500])
    ]
    (await api.post("/api/ml/feedback", json=feedback)).raise_for_status()
    (await api.post("/api/ml/models/model-000/drift-check", params={"version": "1"})).raise_for_status()
    (await api.post("/api/ml/monitoring/check")).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplatform-ui-bench-") as folder:
        results = asyncio.run(run(args.models, args.runs, Path(folder)))
    print_table(
        f"Web console pages, embedded default, {args.models} models, {args.runs} runs each (server time)",
        results,
    )


if __name__ == "__main__":
    main()
