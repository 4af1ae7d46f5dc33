"""Training jobs that outlive their worker or their instance: checkpoints, resume, leases, max attempts."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from mlplatform import db
from mlplatform.app import create_app
from mlplatform.clock import utcnow
from mlplatform.formats.base import Task
from mlplatform.ids import new_id
from mlplatform.platform import Platform
from mlplatform.settings import DatabaseSettings
from mlplatform.training.checkpoints import round_of
from mlplatform.training.schemas import TrainingJobRead, ValidationSpec
from tests.api.conftest import ADMIN_KEY, AppFactory, local_cluster, settings_for, wait_started
from tests.api.test_training_api import TERMINAL, job_body, table, wait_for

EVERY = 20  # rounds between checkpoints in these tests
LONG = {"n_estimators": 4000, "max_depth": 6}  # seconds of training on 2,000 rows


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A LocalCluster of this module's own (its workers get killed): 2 worker processes, 1 thread each."""
    with local_cluster() as local:
        yield local


def jobs_settings(cluster: Any, **extra: Any) -> dict[str, Any]:
    return {
        "scheduler": cluster.scheduler_address,
        "checkpoint-every": EVERY,
        "reconcile-seconds": 0.3,
        "heartbeat-seconds": 0.5,
        "lease-seconds": 3,
        **extra,
    }


async def upload(client: httpx.AsyncClient, rows: int = 2000) -> str:
    content, _ = table(rows)
    response = await client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "d"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def checkpoints(platform: Platform, job_id: str) -> list[str]:
    return [info.key for info in await platform.artifacts.list(f"checkpoints/{job_id}/")]


async def no_checkpoints_left(platform: Platform, job_id: str) -> None:
    """None once the job's runs have stopped: deleted when it ends, and swept again a few seconds later (a
    run Dask cannot interrupt may write one more before it notices)."""
    async with asyncio.timeout(30):
        while await checkpoints(platform, job_id):
            await asyncio.sleep(0.2)


async def wait_for_checkpoint(client: httpx.AsyncClient, platform: Platform, job_id: str) -> list[str]:
    """The checkpoint keys once one exists and the job's worker is known, while the job still runs."""
    async with asyncio.timeout(60):
        while True:
            job = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()
            assert job["state"] in {"queued", "running"}, job
            if job["worker"] and (found := await checkpoints(platform, job_id)):
                return found
            await asyncio.sleep(0.05)


def kill_worker(cluster: Any, address: str) -> None:
    """SIGKILL the worker process at `address` (its nanny starts a new one)."""
    nannies = [nanny for nanny in cluster.workers.values() if nanny.worker_address == address]
    assert len(nannies) == 1, (address, [n.worker_address for n in cluster.workers.values()])
    os.kill(nannies[0].pid, signal.SIGKILL)


async def test_checkpoints_are_written_while_a_job_runs_and_deleted_when_it_succeeds(
    make_app: AppFactory, cluster: Any
) -> None:
    client, platform = await make_app(jobs=jobs_settings(cluster))
    dataset = await upload(client)
    body = job_body(dataset, hyperparameters=LONG)  # seconds: long enough to see a checkpoint under load
    job_id = (await client.post("/api/ml/training-jobs", json=body)).json()["id"]
    found = await wait_for_checkpoint(client, platform, job_id)
    assert len(found) <= 2 and all(key.endswith(".ubj") for key in found)  # only the latest is kept
    job = await wait_for(client, job_id, TERMINAL)
    assert job["state"] == "succeeded" and job["progress"]["current"] == LONG["n_estimators"], job
    assert job["resumed_from"] is None and job["lease_owner"] is None and job["attempt"] == 1
    await no_checkpoints_left(platform, job_id)


async def test_a_cancelled_job_leaves_no_checkpoint(make_app: AppFactory, cluster: Any) -> None:
    client, platform = await make_app(jobs=jobs_settings(cluster))
    dataset = await upload(client)
    body = job_body(
        dataset, algorithm="lightgbm", hyperparameters={"n_estimators": 100_000, "num_leaves": 31}
    )
    job_id = (await client.post("/api/ml/training-jobs", json=body)).json()["id"]
    found = await wait_for_checkpoint(client, platform, job_id)
    assert found[-1].endswith(".txt")
    await client.post(f"/api/ml/training-jobs/{job_id}/cancel")
    job = await wait_for(client, job_id, TERMINAL)
    assert job["state"] == "cancelled" and job["version_id"] is None
    assert await checkpoints(platform, job_id) == []  # deleted before the job reads as ended
    await no_checkpoints_left(platform, job_id)


async def test_a_job_whose_worker_dies_resumes_from_its_checkpoint_and_registers_once(
    make_app: AppFactory, cluster: Any
) -> None:
    client, platform = await make_app(jobs=jobs_settings(cluster))
    dataset = await upload(client)
    job_id = (
        await client.post("/api/ml/training-jobs", json=job_body(dataset, hyperparameters=LONG))
    ).json()["id"]
    saved = await wait_for_checkpoint(client, platform, job_id)
    job = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()
    kill_worker(cluster, job["worker"])
    async with asyncio.timeout(60):  # the job's record, once the new run reports
        while (job := (await client.get(f"/api/ml/training-jobs/{job_id}")).json())["resumed_from"] is None:
            assert job["state"] == "running", job
            await asyncio.sleep(0.05)
    assert job["attempt"] == 2 and "died" in job["error"]
    assert job["resumed_from"] % EVERY == 0 and job["resumed_from"] >= round_of(saved[-1])
    assert job["progress"]["current"] >= job["resumed_from"]  # progress goes on from the checkpoint
    job = await wait_for(client, job_id, TERMINAL, timeout=120)
    assert job["state"] == "succeeded" and job["error"] is None, job
    assert job["progress"]["current"] == LONG["n_estimators"] and job["attempt"] == 2
    versions = (await client.get("/api/ml/models/houses/versions")).json()
    assert [v["training_job_id"] for v in versions["items"]] == [job_id]
    await no_checkpoints_left(platform, job_id)


async def test_a_job_out_of_attempts_fails_with_the_reason_and_leaves_nothing(
    make_app: AppFactory, cluster: Any
) -> None:
    client, platform = await make_app(jobs=jobs_settings(cluster, **{"max-attempts": 1}))
    dataset = await upload(client)
    job_id = (
        await client.post("/api/ml/training-jobs", json=job_body(dataset, hyperparameters=LONG))
    ).json()["id"]
    await wait_for_checkpoint(client, platform, job_id)
    worker = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()["worker"]
    kill_worker(cluster, worker)
    job = await wait_for(client, job_id, TERMINAL, timeout=60)
    assert job["state"] == "failed", job
    assert job["error"] == f"gave up after 1 attempts; last: worker {worker} died while it trained"
    assert job["version_id"] is None and job["lease_owner"] is None
    assert (await client.get("/api/ml/models/houses")).status_code == 404
    await no_checkpoints_left(platform, job_id)
    assert await platform.artifacts.list("models/") == []


async def test_a_stopping_instance_hands_its_job_to_another_that_resumes_it(
    make_app: AppFactory, cluster: Any, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=postgres_url))
    shared = {
        "database": {"url": postgres_url},
        "cache": {"url": redis_url, "timeout-ms": 500},
        "jobs": jobs_settings(cluster, **{"reconcile-seconds": 60}),  # only the second one looks
    }
    first = create_app(settings_for(tmp_path, **shared))
    async with (
        LifespanManager(first, startup_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://first",
            headers={"X-API-Key": ADMIN_KEY},
        ) as client,
    ):
        platform: Platform = first.state.platform
        await wait_started(platform)
        dataset = await upload(client)
        submitted = await client.post("/api/ml/training-jobs", json=job_body(dataset, hyperparameters=LONG))
        job_id = submitted.json()["id"]
        saved = await wait_for_checkpoint(client, platform, job_id)
    handed = await platform.training.store.get(job_id)  # the first app has stopped
    await platform.database.dispose()  # the connection that read opened
    assert (handed.state, handed.lease_owner, handed.attempt) == ("running", None, 0)

    second, other = await make_app(**{**shared, "jobs": jobs_settings(cluster)})
    job = await wait_for(second, job_id, TERMINAL, timeout=120)
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 1 and job["resumed_from"] % EVERY == 0
    assert job["resumed_from"] >= round_of(saved[-1])  # the checkpoint the first instance's run left
    versions = (await second.get("/api/ml/models/houses/versions")).json()
    assert [v["training_job_id"] for v in versions["items"]] == [job_id]
    await no_checkpoints_left(other, job_id)


def orphan(dataset: str, **values: Any) -> TrainingJobRead:
    """A running job whose instance died: its lease ran out a minute ago."""
    now = utcnow()
    return TrainingJobRead.model_validate(
        {
            "id": new_id(),
            "model": "houses",
            "dataset": dataset,
            "target": "label",
            "features": ["x1", "x2", "x3", "flag"],
            "task": Task.CLASSIFICATION,
            "algorithm": "xgboost",
            "hyperparameters": {"n_estimators": 30, "max_depth": 3},
            "validation": ValidationSpec(),
            "parent": None,
            "tags": {},
            "state": "running",
            "attempt": 1,
            "created_at": now - timedelta(minutes=5),
            "created_by": "ada",
            "started_at": now - timedelta(minutes=5),
            "heartbeat_at": now - timedelta(minutes=2),
            "lease_owner": "dead-host:1:x",
            "lease_expires_at": now - timedelta(minutes=1),
            **values,
        }
    )


async def test_the_reconciler_resumes_a_job_whose_instance_died(make_app: AppFactory, cluster: Any) -> None:
    client, platform = await make_app(jobs=jobs_settings(cluster))
    lost = orphan(await upload(client, rows=300))
    await platform.training.store.create(lost)
    job = await wait_for(client, lost.id, TERMINAL)
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 2 and job["lease_owner"] is None and job["version_id"]


async def test_a_job_whose_instances_kept_dying_fails_once_out_of_attempts(
    make_app: AppFactory, cluster: Any
) -> None:
    client, platform = await make_app(jobs=jobs_settings(cluster))
    lost = orphan(await upload(client, rows=300), attempt=3, error="worker tcp://10.0.0.9:4000 died")
    await platform.training.store.create(lost)
    job = await wait_for(client, lost.id, TERMINAL)
    assert job["state"] == "failed" and job["version_id"] is None
    assert job["error"] == "gave up after 3 attempts; last: worker tcp://10.0.0.9:4000 died"
    assert (await client.get("/api/ml/models/houses")).status_code == 404
