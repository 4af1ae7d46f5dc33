"""A training job through `mlplatform serve` on embedded defaults: the server's own LocalCluster trains it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import numpy as np

from tests.e2e.conftest import ServerProcess

ADMIN_KEY = "mlp_e2e-bootstrap-admin-key-0123456789"
STOPPED_BY_SIGTERM = {0, -15}


def test_a_job_trains_on_the_embedded_cluster_and_the_server_stops_cleanly(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    rows = "\n".join(f"{a:.5f},{b:.5f},{int(a + b > 0)}" for a, b in x)
    headers = {"X-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        dataset = client.post(
            "/api/ml/datasets", files={"file": ("d.csv", f"a,b,y\n{rows}\n".encode())}, data={"name": "ab"}
        ).json()
        body = {"model": "ab", "dataset": dataset["id"], "target": "y", "algorithm": "lightgbm"}
        submitted = client.post(
            "/api/ml/training-jobs", json={**body, "hyperparameters": {"n_estimators": 10}}
        )
        assert submitted.status_code == 202, submitted.text
        deadline = time.monotonic() + 90
        path = f"/api/ml/training-jobs/{submitted.json()['id']}"
        while (job := client.get(path).json())["state"] in {"queued", "running"}:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "succeeded", (job, server.output())
        assert job["task"] == "classification" and job["worker"].startswith("tcp://127.0.0.1:")
        predicted = client.post("/api/ml/predict", json={"model": "ab", "features": {"a": 2.0, "b": 1.0}})
        assert predicted.status_code == 200 and predicted.json()["prediction"] == 1, predicted.text
        assert client.get("/actuator/health").json()["components"]["jobs"]["status"] == "UP"
    assert server.terminate() in STOPPED_BY_SIGTERM
    assert "stopped" in server.output()
