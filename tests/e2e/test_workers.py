"""`server.workers > 1`: several processes behind one port, one set of metrics, state shared through Redis."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.e2e.conftest import ServerProcess

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-workers-admin-key-0123456789abcdef"
FEATURES = ["a", "b", "c"]
REQUESTS = 60


def samples(text: str, name: str) -> dict[str, float]:
    """Every sample of metric `name` in a Prometheus text page, by its label string."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match[1] or ""] = float(match[2])
    return found


def register_model(server: ServerProcess, tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(200, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    artifact = tmp_path / "model.skops"
    skops.io.dump(model, artifact)
    with artifact.open("rb") as file:
        response = httpx.post(
            f"{server.base_url}/api/ml/models/m/versions",
            files={"file": ("model.skops", file, "application/octet-stream")},
            data={"metadata": json.dumps({"feature_names": FEATURES})},
            headers={"X-API-Key": ADMIN_KEY},
            timeout=60,
        )
    assert response.status_code == 201, response.text


def predict(server: ServerProcess, key: str) -> httpx.Response:
    """One prediction on a connection of its own, so that the kernel hands it to either worker."""
    body = {"model": "m", "features": [0.5, -1.0, 2.0]}
    return httpx.post(f"{server.base_url}/api/ml/predict", json=body, headers={"X-API-Key": key}, timeout=30)


def test_two_workers_count_every_prediction_in_every_scrape_and_share_key_revocation(
    start_server: StartServer, redis_url: str, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"  # the operator's own folder, so that the test sees each worker's files
    server = start_server(
        {
            "MLPLATFORM_SERVER__WORKERS": "2",
            "MLPLATFORM_CACHE__URL": redis_url,
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    ready = server.wait_for("/actuator/health/readiness")
    # Ready only once both workers are: each marked itself started in the shared folder.
    assert len(list(metrics_dir.glob("started-*"))) == 2, ready.text
    register_model(server, tmp_path)
    known = 0  # the worker that registered it tells the other through Redis: wait until both know the model
    deadline = time.monotonic() + 30
    while known < 10:
        assert time.monotonic() < deadline, "the second worker never heard of the model"
        found = httpx.get(f"{server.base_url}/v2/models/m", headers={"X-API-Key": ADMIN_KEY}, timeout=10)
        known = known + 1 if found.status_code == 200 else 0
    created = httpx.post(
        f"{server.base_url}/api/admin/api-keys",
        json={"name": "p", "role": "predictor", "owner": "t"},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
    ).json()

    for _ in range(REQUESTS):
        response = predict(server, created["key"])
        assert response.status_code == 200, response.text
    worker_pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}
    assert len(worker_pids) == 2, "both workers should have served predictions"

    time.sleep(1.5)  # sampled gauges are copied into the shared files every second
    for _ in range(8):  # each scrape lands on either worker: every one must see all the predictions
        page = server.get("/actuator/prometheus", headers={"X-API-Key": ADMIN_KEY}).text
        assert list(samples(page, "ml_predictions_total").values()) == [REQUESTS]
        requests = samples(page, "http_server_requests_seconds_count")
        assert sum(v for k, v in requests.items() if 'route="/api/ml/predict"' in k) == REQUESTS
        assert list(samples(page, "ml_predictions_throughput").values()) == [REQUESTS]
        assert len(samples(page, "ml_prediction_log_queue_depth")) == 1  # one series, not one per worker
        assert list(samples(page, "ml_models_deployed").values()) == [1]
        assert "process_cpu_seconds_total" not in page  # one process's own: not shown for several

    revoked = httpx.delete(
        f"{server.base_url}/api/admin/api-keys/{created['id']}", headers={"X-API-Key": ADMIN_KEY}, timeout=30
    )
    assert revoked.status_code == 200
    refused = [predict(server, created["key"]).status_code for _ in range(20)]
    assert refused == [401] * 20  # the other worker heard of the revocation through Redis

    assert server.terminate() in (0, -signal.SIGTERM)
    assert list(metrics_dir.glob("gauge_live*.db")) == []  # each worker withdrew its live gauges
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # counters stay, until the next start


def test_several_workers_refuse_the_in_process_cache(start_server: StartServer) -> None:
    server = start_server({"MLPLATFORM_SERVER__WORKERS": "2"})
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the server started with two workers on memory://")
    assert server.process.returncode != 0
    assert "server.workers: 2 worker processes need a shared cache" in server.output()
