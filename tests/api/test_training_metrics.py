"""Training metrics on /actuator/prometheus: jobs by state from the database, duration by algorithm."""

from __future__ import annotations

import asyncio
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import AppFactory
from tests.api.test_training_api import TERMINAL, app_with_dataset, job_body, scheduler, wait_for

__all__ = ["scheduler"]  # the module's LocalCluster fixture


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                labels = {k: v for k, v in sample.labels.items() if k not in ("application", "environment")}
                found[tuple(sorted(labels.items()))] = sample.value
    return found


async def test_job_counts_by_state_and_the_duration_of_succeeded_jobs(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    async with asyncio.timeout(30):  # counted once the app has started, then every 15 s and on each change
        while not (before := samples((await client.get("/actuator/prometheus")).text, "ml_training_jobs")):
            await asyncio.sleep(0.05)
    assert before == {(("state", s),): 0.0 for s in ("queued", "running", "succeeded", "failed", "cancelled")}

    done = (await client.post("/api/ml/training-jobs", json=job_body(dataset))).json()
    job = await wait_for(client, done["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    body = job_body(dataset, hyperparameters={"n_estimators": 200_000})
    long = (await client.post("/api/ml/training-jobs", json=body)).json()
    await wait_for(client, long["id"], {"running"})
    await client.post(f"/api/ml/training-jobs/{long['id']}/cancel")
    await wait_for(client, long["id"], TERMINAL)

    async with asyncio.timeout(30):  # re-counted just after the job's end is stored
        while True:
            text = (await client.get("/actuator/prometheus")).text
            counts = samples(text, "ml_training_jobs")
            if counts[(("state", "cancelled"),)] == 1:
                break
            await asyncio.sleep(0.05)
    assert counts[(("state", "succeeded"),)] == 1 and counts[(("state", "cancelled"),)] == 1
    assert counts[(("state", "running"),)] == 0 and counts[(("state", "queued"),)] == 0
    durations = samples(text, "ml_training_duration_seconds_count")
    assert durations == {(("algorithm", "xgboost"),): 1.0}  # cancelled jobs are not timed
    total = samples(text, "ml_training_duration_seconds_sum")[(("algorithm", "xgboost"),)]
    started, finished = job["started_at"], job["finished_at"]
    expected = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    assert abs(total - expected) < 1e-3
