"""`mlplatform serve` on PostgreSQL and SeaweedFS S3, training on a separately started Dask cluster: a job
whose worker is killed mid-job resumes from its checkpoint in S3; a job cancelled through the API stops; a
distributed XGBoost job on the Parquet dataset trains on both workers, each reading its rows from S3."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform import db
from mlplatform.settings import DatabaseSettings, StorageSettings
from mlplatform.stores.artifacts import create_artifact_store
from mlplatform.training.checkpoints import round_of
from tests.e2e.conftest import DaskCluster, ServerProcess

ADMIN_KEY = "mlp_e2e-bootstrap-admin-key-0123456789"
EVERY = 20


def parquet_dataset(rows: int = 3000) -> bytes:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, 4))
    label = (x[:, 0] + 0.5 * x[:, 1] - x[:, 3] + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "label": label})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def checkpoint_keys(storage: StorageSettings, job_id: str) -> list[str]:
    async def listed() -> list[str]:
        store = create_artifact_store(storage)
        try:
            return [info.key for info in await store.list(f"checkpoints/{job_id}/")]
        finally:
            await store.close()

    return asyncio.run(listed())


def poll(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not until(job := client.get(f"/api/ml/training-jobs/{job_id}").json()):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_a_job_survives_a_killed_worker_and_another_cancels_on_a_real_cluster(
    start_server: Callable[..., ServerProcess],
    dask_cluster: DaskCluster,
    postgres_url: str,
    s3_url: str,
    s3_credentials: dict[str, str],
) -> None:
    db.upgrade(DatabaseSettings(url=postgres_url))
    storage = StorageSettings.model_validate({"url": s3_url, **s3_credentials})
    server = start_server(
        {
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "MLPLATFORM_DATABASE__URL": postgres_url,
            "MLPLATFORM_STORAGE__URL": s3_url,
            "MLPLATFORM_STORAGE__ACCESS_KEY_ID": s3_credentials["access-key-id"],
            "MLPLATFORM_STORAGE__SECRET_ACCESS_KEY": s3_credentials["secret-access-key"],
            "MLPLATFORM_JOBS__SCHEDULER": dask_cluster.address,
            "MLPLATFORM_JOBS__CHECKPOINT_EVERY": str(EVERY),
        }
    )
    server.wait_for("/actuator/health/readiness")
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as client:
        uploaded = client.post(
            "/api/ml/datasets", files={"file": ("d.parquet", parquet_dataset())}, data={"name": "abcd"}
        )
        assert uploaded.status_code == 201, uploaded.text
        body = {"model": "abcd", "dataset": uploaded.json()["id"], "target": "label", "algorithm": "xgboost"}
        submitted = client.post(
            "/api/ml/training-jobs", json={**body, "hyperparameters": {"n_estimators": 4000, "max_depth": 6}}
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]

        # A checkpoint in S3 and the job's worker known: kill that worker.
        job = poll(client, job_id, lambda j: bool(j["worker"]) and j["state"] == "running", timeout=90)
        deadline = time.monotonic() + 60
        while not (saved := checkpoint_keys(storage, job_id)):
            assert time.monotonic() < deadline, (client.get(f"/api/ml/training-jobs/{job_id}").json(), saved)
            time.sleep(0.1)
        assert saved[-1].endswith(".ubj")
        job = client.get(f"/api/ml/training-jobs/{job_id}").json()
        killed = job["worker"]
        assert killed in dask_cluster.workers, (killed, list(dask_cluster.workers))
        dask_cluster.kill(killed)
        dask_cluster.start_worker()  # the cluster keeps two workers for the next test

        # The job resumes on another worker as attempt 2, from the checkpoint: progress does not restart.
        resumed = poll(client, job_id, lambda j: j["resumed_from"] is not None, timeout=90)
        assert resumed["state"] == "running" and resumed["attempt"] == 2, resumed
        assert resumed["worker"] != killed and killed in resumed["error"]
        start = resumed["resumed_from"]
        assert start % EVERY == 0 and start >= round_of(saved[-1])  # type: ignore[operator]
        seen: list[int] = []
        deadline = time.monotonic() + 180
        while (job := client.get(f"/api/ml/training-jobs/{job_id}").json())["state"] == "running":
            seen.append(job["progress"]["current"])
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["state"] == "succeeded", (job, server.output())
        assert (job["attempt"], job["error"], job["progress"]["current"]) == (2, None, 4000)
        assert seen and min(seen) >= start, seen[:10]
        versions = client.get("/api/ml/models/abcd/versions").json()["items"]
        assert [v["training_job_id"] for v in versions] == [job_id]
        assert checkpoint_keys(storage, job_id) == []

        # A cancel through the API stops a running job on the cluster, leaving no version or checkpoint.
        long = client.post(
            "/api/ml/training-jobs", json={**body, "hyperparameters": {"n_estimators": 200_000}}
        ).json()
        poll(client, long["id"], lambda j: (j["progress"]["current"] or 0) > EVERY, timeout=90)
        assert client.post(f"/api/ml/training-jobs/{long['id']}/cancel").status_code == 202
        cancelled = poll(client, long["id"], lambda j: j["state"] != "running", timeout=30)
        assert cancelled["state"] == "cancelled" and cancelled["version_id"] is None, cancelled
        assert len(client.get("/api/ml/models/abcd/versions").json()["items"]) == 1
        assert checkpoint_keys(storage, long["id"]) == []

        # A distributed XGBoost job on the same Parquet dataset in S3: both workers read their rows and train.
        from dask.utils import key_split
        from distributed import Client

        with Client(dask_cluster.address, timeout=30) as watcher:
            watcher.get_task_stream()  # the scheduler records which worker ran which task from here on
            both = set(watcher.scheduler_info(n_workers=-1)["workers"])
            spread = client.post(
                "/api/ml/training-jobs",
                json={
                    **body,
                    "model": "abcd-dask",
                    "distributed": True,
                    "hyperparameters": {"n_estimators": 30},
                },
            )
            assert spread.status_code == 202, spread.text
            done = poll(client, spread.json()["id"], lambda j: j["state"] not in ("queued", "running"), 180)
            assert done["state"] == "succeeded", (done, server.output())
            ran = {r["worker"] for r in watcher.get_task_stream() if key_split(r["key"]) == "load_part"}
        assert len(both) == 2 and ran == both, (ran, both)
        assert done["metrics"]["accuracy"] > 0.7
        row = {"a": 1.0, "b": 1.0, "c": 0.0, "d": -1.0}
        answer = client.post("/api/ml/predict", json={"model": "abcd-dask", "features": row})
        assert answer.status_code == 200 and answer.json()["prediction"] == 1, answer.text
