"""Distributed training through the HTTP API: xgboost.dask and lightgbm.dask on a real 2-worker LocalCluster,
each worker reading its Parquet row groups from storage (SeaweedFS S3 or a folder)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from asgi_lifespan import LifespanManager

from mlplatform import db
from mlplatform.app import create_app
from mlplatform.platform import Platform
from mlplatform.settings import DatabaseSettings
from mlplatform.training.checkpoints import round_of
from tests.api.conftest import ADMIN_KEY, AppFactory, local_cluster, settings_for, wait_started
from tests.api.test_training_api import TERMINAL, table, wait_for
from tests.api.test_training_recovery import no_checkpoints_left

FEATURES = ["x1", "x2", "x3", "flag"]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """Two worker processes of one thread each: a job's own task secedes, so both can train. The scheduler
    fails tasks pinned to a worker that is gone, as the embedded one does."""
    with local_cluster() as cluster:
        yield str(cluster.scheduler_address)


@pytest.fixture
async def task_stream(scheduler: str) -> AsyncIterator[Any]:
    """A client of the same cluster that reads which worker ran which task (the scheduler's task stream)."""
    from distributed import Client

    async with Client(scheduler, asynchronous=True) as client:
        await client.get_task_stream()  # installs the scheduler's task-stream plugin: recorded from here on
        yield client


def holds_task(prefix: str, dask_worker: Any) -> bool:
    """On a worker (`client.run`): whether it holds a task whose key starts with `prefix`."""
    return any(str(key).startswith(prefix) for key in dask_worker.state.tasks)


async def workers_that_ran(client: Any, prefix: str) -> set[str]:
    from dask.utils import key_split

    records = await client.get_task_stream()
    return {r["worker"] for r in records if key_split(r["key"]) == prefix}


def parquet(rows: int, row_group: int, seed: int = 0) -> tuple[bytes, dict[str, Any]]:
    """The same columns as the single-worker tests' CSV, as Parquet in several row groups."""
    content, data = table(rows, seed)
    frame = pa.csv.read_csv(io.BytesIO(content))
    sink = io.BytesIO()
    pq.write_table(frame, sink, row_group_size=row_group)
    return sink.getvalue(), data


async def upload(client: httpx.AsyncClient, content: bytes, filename: str) -> str:
    files = {"file": (filename, content)}
    response = await client.post("/api/ml/datasets", files=files, data={"name": "big"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def body(dataset: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "big",
        "dataset": dataset,
        "target": "label",
        "features": FEATURES,
        "algorithm": "xgboost",
        "hyperparameters": {"n_estimators": 25, "max_depth": 3},
        **extra,
    }


def rows_of(data: dict[str, Any], count: int) -> np.ndarray[Any, Any]:
    return np.column_stack([data["x"][:count], np.arange(count) % 2]).round(6)


async def served(client: httpx.AsyncClient, X: np.ndarray[Any, Any]) -> list[Any]:
    instances = [dict(zip(FEATURES, map(float, row), strict=True)) for row in X]
    response = await client.post("/api/ml/predict/batch", json={"model": "big", "instances": instances})
    assert response.status_code == 200, response.text
    return [p["prediction"] for p in response.json()["predictions"]]


async def artifact(client: httpx.AsyncClient) -> bytes:
    response = await client.get("/api/ml/models/big/versions/1/artifact")
    assert response.status_code == 200, response.text
    return response.content


async def test_a_big_parquet_dataset_on_s3_trains_with_xgboost_dask_on_both_workers(
    make_app: AppFactory, scheduler: str, task_stream: Any, s3_url: str, s3_credentials: dict[str, str]
) -> None:
    client, platform = await make_app(
        jobs={"scheduler": scheduler, "distributed-threshold-rows": 1000},
        storage={"url": s3_url, **s3_credentials},
    )
    content, data = parquet(4000, row_group=500)
    dataset = await upload(client, content, "big.parquet")
    # Past the threshold, and not said otherwise: distributed.
    submitted = await client.post("/api/ml/training-jobs", json=body(dataset))
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["distributed"] is True
    job = await wait_for(client, submitted.json()["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    assert job["progress"]["current"] == 25 and job["progress"]["metric_name"] == "logloss"
    assert set(job["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert job["metrics"]["accuracy"] > 0.85

    both = set((await task_stream.scheduler.identity(n_workers=-1))["workers"])
    assert len(both) == 2
    assert await workers_that_ran(task_stream, "load_part") == both  # each read its row groups from S3
    # xgboost.dask runs its per-worker training (and DMatrix) tasks through map_worker_partitions' `fn`
    assert await workers_that_ran(task_stream, "fn") == both

    version = (await client.get("/api/ml/models/big/versions/1")).json()
    assert version["framework"] == "xgboost" and version["artifact"]["format"] == "xgboost-ubj"
    assert version["training_job_id"] == job["id"] and version["metrics"] == job["metrics"]
    assert version["classes"] == ["no", "yes"]

    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(await artifact(client)))
    X = rows_of(data, 200)
    expected = np.where(booster.predict(xgboost.DMatrix(X)) > 0.5, "yes", "no").tolist()
    assert await served(client, X) == expected
    assert np.mean(np.asarray(expected) == data["label"][:200]) > 0.85
    assert await platform.artifacts.list("checkpoints/") == []


async def test_lightgbm_dask_trains_a_regression_when_asked_and_predicts_the_same(
    make_app: AppFactory, scheduler: str, task_stream: Any
) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler})
    content, data = parquet(3000, row_group=3000)  # one row group: sliced so that both workers get rows
    dataset = await upload(client, content, "big.parquet")
    request = body(
        dataset,
        target="price",
        algorithm="lightgbm",
        distributed=True,
        hyperparameters={"n_estimators": 30, "num_leaves": 7},
    )
    submitted = (await client.post("/api/ml/training-jobs", json=request)).json()
    assert submitted["distributed"] is True and submitted["task"] == "regression"
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    assert set(job["metrics"]) == {"rmse", "mae", "r2"} and job["metrics"]["r2"] > 0.9
    both = set((await task_stream.scheduler.identity(n_workers=-1))["workers"])
    assert await workers_that_ran(task_stream, "train_part") == both  # lightgbm.dask._train_part

    import lightgbm

    version = (await client.get("/api/ml/models/big/versions/1")).json()
    assert version["artifact"]["format"] == "lightgbm-text"
    booster = lightgbm.Booster(model_str=(await artifact(client)).decode())
    X = rows_of(data, 100)
    expected = booster.predict(X).tolist()
    assert await served(client, X) == pytest.approx(expected, rel=1e-6, abs=1e-6)  # served as float32


@pytest.mark.parametrize("algorithm", ["xgboost", "lightgbm"])
async def test_a_distributed_job_cancels_on_every_worker_and_leaves_nothing(
    make_app: AppFactory, scheduler: str, task_stream: Any, algorithm: str
) -> None:
    client, platform = await make_app(jobs={"scheduler": scheduler})
    content, _ = parquet(4000, row_group=500)
    dataset = await upload(client, content, "big.parquet")
    request = body(dataset, algorithm=algorithm, distributed=True, hyperparameters={"n_estimators": 200_000})
    submitted = (await client.post("/api/ml/training-jobs", json=request)).json()
    async with asyncio.timeout(90):
        while True:
            job = (await client.get(f"/api/ml/training-jobs/{submitted['id']}")).json()
            if job["state"] in TERMINAL or (job["progress"]["current"] or 0) > 0:
                break
            await asyncio.sleep(0.1)
    assert job["state"] == "running" and 0 < job["progress"]["fraction"] < 1, job
    assert (await client.post(f"/api/ml/training-jobs/{submitted['id']}/cancel")).status_code == 202
    job = await wait_for(client, submitted["id"], TERMINAL, timeout=15)
    # Ended only once no worker still trains it (a LightGBM part ending after its job would free the
    # process-global network of the next job's part on that worker).
    running = await task_stream.processing()
    part = {"xgboost": "do_train-", "lightgbm": "_train_part-"}[algorithm]
    assert not [key for keys in running.values() for key in keys if str(key).startswith(part)]
    assert job["state"] == "cancelled" and job["version_id"] is None
    assert (await client.get("/api/ml/models/big")).status_code == 404
    assert await platform.artifacts.list("models/") == []

    # Both workers are free and sound afterwards: the same cluster trains the next job.
    request["hyperparameters"] = {"n_estimators": 5}
    again = (await client.post("/api/ml/training-jobs", json=request)).json()
    assert (await wait_for(client, again["id"], TERMINAL))["state"] == "succeeded"


async def test_a_cancelled_lightgbm_fit_returns_only_once_every_part_has_ended(
    task_stream: Any, tmp_path: Path
) -> None:
    """The job's own task, run directly: `lightgbm.dask` raises as soon as one part stops, and the task
    waits for the others before it answers `cancelled` (the service then lets the next job onto the same
    worker processes, whose LightGBM network is global to the process)."""
    from distributed import Event, Variable

    from mlplatform.training.distributed import run_distributed

    content, _ = parquet(4000, row_group=500)
    (tmp_path / "data.parquet").write_bytes(content)
    spec = {
        "job_id": "direct",
        "storage": {"url": f"file://{tmp_path}"},
        "dataset_key": "data.parquet",
        "target": "label",
        "features": FEATURES,
        "task": "classification",
        "algorithm": "lightgbm",
        "hyperparameters": {"n_estimators": 200_000, "num_leaves": 7},
        "validation_fraction": 0.2,
        "distributed": True,
        "progress_name": "direct-progress",
        "cancel_name": "direct-cancel",
    }
    progress = Variable(spec["progress_name"], client=task_stream)
    await progress.set({})
    future = task_stream.submit(run_distributed, spec, pure=False)
    async with asyncio.timeout(60):
        while not ((await progress.get()) or {}).get("progress", {}).get("current"):
            await asyncio.sleep(0.05)
    await Event(spec["cancel_name"], client=task_stream).set()
    result = await future
    running = await task_stream.processing()
    assert result["status"] == "cancelled"
    assert not [key for keys in running.values() for key in keys if str(key).startswith("_train_part-")]


async def test_distributed_where_it_cannot_run_is_422_naming_it_and_queues_nothing(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _ = await make_app(jobs={"scheduler": scheduler, "distributed-threshold-rows": 100})
    csv = await upload(client, table(300)[0], "small.csv")
    parquet_id = await upload(client, parquet(300, row_group=100)[0], "small.parquet")
    for request in (
        body(csv, distributed=True),
        body(parquet_id, distributed=True, algorithm="random_forest", hyperparameters={}),
    ):
        response = await client.post("/api/ml/training-jobs", json=request)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == "distributed"
    assert (await client.get("/api/ml/training-jobs")).json()["total"] == 0

    # Past the threshold but not possible, and not asked: one worker trains it.
    for request in (body(csv), body(parquet_id, algorithm="random_forest", hyperparameters={})):
        submitted = (await client.post("/api/ml/training-jobs", json=request)).json()
        assert submitted["distributed"] is False
        job = await wait_for(client, submitted["id"], TERMINAL)
        assert job["state"] == "succeeded" and job["distributed"] is False, job


async def test_a_distributed_xgboost_job_handed_over_resumes_from_its_checkpoint(
    make_app: AppFactory, scheduler: str, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """XGBoost's rank 0 writes checkpoints in a distributed run too: an instance that stops hands the job
    back, and the next one's run continues from the newest checkpoint on the cluster's workers."""
    every = 10
    await asyncio.to_thread(db.upgrade, DatabaseSettings(url=postgres_url))
    shared = {
        "database": {"url": postgres_url},
        "cache": {"url": redis_url, "timeout-ms": 500},
        "jobs": {"scheduler": scheduler, "checkpoint-every": every, "reconcile-seconds": 60},
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
        content, _ = parquet(8_000, row_group=1_000)
        dataset = await upload(client, content, "big.parquet")
        request = body(dataset, distributed=True, hyperparameters={"n_estimators": 400, "max_depth": 4})
        job_id = (await client.post("/api/ml/training-jobs", json=request)).json()["id"]
        async with asyncio.timeout(120):
            while not (saved := await platform.artifacts.list(f"checkpoints/{job_id}/")):
                job = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()
                assert job["state"] not in TERMINAL, job
                await asyncio.sleep(0.05)
    handed = await platform.training.store.get(job_id)  # the first app has stopped and handed it back
    await platform.database.dispose()
    assert (handed.state, handed.lease_owner) == ("running", None), handed
    assert saved[-1].key.endswith(".ubj")

    second, other = await make_app(**{**shared, "jobs": {**shared["jobs"], "reconcile-seconds": 1}})
    job = await wait_for(second, job_id, TERMINAL, timeout=180)
    assert job["state"] == "succeeded", job
    assert job["resumed_from"] is not None and job["resumed_from"] % every == 0, job
    assert job["resumed_from"] >= round_of(saved[-1].key)  # type: ignore[operator]
    assert job["progress"]["current"] == 400

    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(await artifact(second)))
    assert booster.num_boosted_rounds() == 400  # the checkpoint's rounds and the rest, not 400 more
    await no_checkpoints_left(other, job_id)  # deleted at the end, swept again a few seconds later


async def test_a_distributed_xgboost_job_whose_peer_worker_is_killed_runs_again_from_its_checkpoint(
    make_app: AppFactory, scheduler: str, task_stream: Any
) -> None:
    """SIGKILL of the worker training next to the job's own task: the collective fails, the run is found
    lost (PeerLost), and attempt 2 continues from the newest checkpoint on the workers there are (the nanny
    brings the killed one back)."""
    import os
    import signal

    every = 10
    client, platform = await make_app(jobs={"scheduler": scheduler, "checkpoint-every": every})
    content, _ = parquet(8_000, row_group=1_000)
    dataset = await upload(client, content, "big.parquet")
    request = body(dataset, distributed=True, hyperparameters={"n_estimators": 2_000, "max_depth": 4})
    job_id = (await client.post("/api/ml/training-jobs", json=request)).json()["id"]
    async with asyncio.timeout(120):
        while not await platform.artifacts.list(f"checkpoints/{job_id}/"):
            job = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()
            assert job["state"] not in TERMINAL, job
            await asyncio.sleep(0.05)
    runs_job = await task_stream.run(holds_task, prefix=f"training-{job_id}-")
    assert sorted(runs_job.values()) == [False, True], runs_job  # the job's own task is on one worker
    peer = next(worker for worker, holding in runs_job.items() if not holding)
    pids = await task_stream.run(os.getpid, workers=[peer])
    os.kill(pids[peer], signal.SIGKILL)

    job = await wait_for(client, job_id, TERMINAL, timeout=180)
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 2 and job["resumed_from"] is not None and job["resumed_from"] % every == 0, job
    assert job["progress"]["current"] == 2_000

    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(await artifact(client)))
    assert booster.num_boosted_rounds() == 2_000
    await task_stream.wait_for_workers(2)  # the nanny restarted it: the next tests have both
