"""`mlplatform experiments create|list|show|promote|stop` against the real server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.models import reference
from tests.e2e.conftest import ServerProcess, run_cli

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-experiments-cli-admin-key-0123456789"


def test_an_ab_test_from_the_command_line(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    env = {"MLPLATFORM_URL": server.base_url, "MLPLATFORM_API_KEY": ADMIN_KEY, "COLUMNS": "250"}

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = run_cli(list(args), env, tmp_path)
        assert result.returncode == code, result.stdout + result.stderr
        return result

    ref = reference("xgboost-ubj", tmp_path / "refs")
    other = reference("lightgbm-text", tmp_path / "refs")
    cli("models", "upload", "churn", str(ref.path))
    cli("models", "upload", "churn", str(other.path))
    refused = cli(
        "experiments", "create", "--model", "churn", "--variant", "a=1:60", "--variant", "b=2:30", code=1
    )
    assert "variants" in refused.stderr and "add up to 90" in refused.stderr

    created = cli(
        "experiments",
        "create",
        "--model",
        "churn",
        "--variant",
        "a=1:50",
        "--variant",
        "b=2:50",
        "--metric",
        "accuracy",
        "--min-samples",
        "20",
        "--name",
        "lgbm vs xgb",
    ).stdout
    experiment = created.split("started experiment ")[1].split()[0]
    headers = {"X-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        answers = [
            client.post(
                "/api/ml/predict",
                json={"model": "churn", "features": ref.X[i % 50].tolist(), "request_id": f"u{i}"},
            ).json()
            for i in range(120)
        ]
        assert {a["variant"] for a in answers} == {"a", "b"}
        deadline = time.monotonic() + 30
        while len(client.get("/api/ml/predictions", params={"model": "churn", "limit": 500}).json()) < 120:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        labels = [{"prediction_id": a["prediction_id"], "actual": a["prediction"]} for a in answers]
        assert client.post("/api/ml/feedback", json=labels).status_code == 200

    listed = cli("experiments", "list", "--model", "churn").stdout
    assert experiment in listed and "running" in listed and "1 experiments" in listed
    shown = cli("experiments", "show", experiment).stdout
    assert "variants (intervals at 95 %)" in shown and "against the control, on accuracy" in shown
    assert "accuracy 1 [" in shown and "recommendation:" in shown
    promoted = cli("experiments", "promote", experiment, "--variant", "b").stdout
    assert "promoted b: production is now churn-v2-" in promoted
    assert "already promoted" in cli("experiments", "stop", experiment, code=1).stderr
