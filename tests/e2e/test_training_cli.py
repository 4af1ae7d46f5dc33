"""`mlplatform train --follow` and `mlplatform jobs list|show|cancel` on the real server and its Dask cluster;
Ctrl-C while following asks whether to cancel the job."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.e2e.conftest import MLPLATFORM, ServerProcess, clean_environment, run_cli

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-train-cli-admin-key-0123456789"


def dataset_file(folder: Path, rows: int) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 3))
    y = (x[:, 0] - x[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    path = folder / "train.csv"
    lines = [f"{a:.5f},{b:.5f},{c:.5f},{label}" for (a, b, c), label in zip(x, y, strict=True)]
    path.write_text("a,b,c,y\n" + "\n".join(lines) + "\n")
    return path


def running_job(server: ServerProcess, model: str) -> dict[str, Any]:
    """The model's job once it runs and has reported a round."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{server.base_url}/api/ml/training-jobs",
            params={"model": model, "state": "running"},
            headers={"X-API-Key": ADMIN_KEY},
        ).json()
        if page["items"] and (page["items"][0]["progress"]["current"] or 0) > 0:
            return dict(page["items"][0])
        time.sleep(0.1)
    raise AssertionError(f"no running job for {model}:\n{server.output()}")


def follow_and_interrupt(
    server: ServerProcess, env: dict[str, str], cwd: Path, args: list[str], answer: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`train --follow` in a child, Ctrl-C once the job runs, `answer` to the question."""
    child = subprocess.Popen(
        [MLPLATFORM, *args, "--follow"],
        env=clean_environment(env),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job = running_job(server, args[args.index("--model") + 1])
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(answer, timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr), job


def test_train_follows_to_a_registered_version_and_jobs_lists_shows_and_cancels(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    env = {"MLPLATFORM_URL": server.base_url, "MLPLATFORM_API_KEY": ADMIN_KEY, "COLUMNS": "200"}

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = run_cli(list(args), env, tmp_path)
        assert result.returncode == code, result.stdout + result.stderr
        return result

    uploaded = cli("datasets", "upload", str(dataset_file(tmp_path, 4000)), "--name", "abc").stdout
    dataset = uploaded.split("uploaded dataset ")[1].split()[0]
    train = ["train", "--dataset", dataset, "--target", "y", "--algorithm", "xgboost"]

    params = ["--param", "n_estimators=30", "--param", "max_depth=3", "--seed", "5"]
    done = cli(*train, "--model", "quick", *params, "--follow")
    assert "queued training job" in done.stdout and "succeeded: registered quick-v1-" in done.stdout
    assert "round 30/30" in done.stdout and "accuracy" in done.stdout and "roc_auc" in done.stdout
    job_id = done.stdout.split("queued training job ")[1].split()[0]
    listed = cli("jobs", "list", "--model", "quick").stdout
    assert job_id in listed and "succeeded" in listed and "1 training jobs" in listed
    shown = cli("jobs", "show", job_id).stdout
    assert "max_depth" in shown and "validation metrics" in shown and "features: a, b, c" in shown
    assert "seed: 5" in shown

    space = '{"strategy": "grid", "metric": "accuracy", "space": {"max_depth": {"choice": [2, 3]}}}'
    searched = cli(*train, "--model", "quick", "--param", "n_estimators=10", "--search", space, "--follow")
    assert "succeeded: registered quick-v2-" in searched.stdout
    search_id = searched.stdout.split("queued training job ")[1].split()[0]
    shown_trials = cli("jobs", "trials", search_id).stdout
    assert "2 trials" in shown_trials and "best" in shown_trials and '{"max_depth": 3}' in shown_trials

    refused = cli(*train, "--model", "bad", "--param", "not_a_parameter=1", code=1)
    assert "not_a_parameter" in refused.stderr and "not a parameter of xgboost" in refused.stderr

    # Ctrl-C, then yes: the job is cancelled and the command says so (exit 1: no version)
    slow = [*train, "--param", "n_estimators=1000000", "--param", "max_depth=4"]
    interrupted, job = follow_and_interrupt(server, env, tmp_path, [*slow, "--model", "slow"], "y\n")
    assert interrupted.returncode == 1, interrupted.stdout + interrupted.stderr
    assert f"cancel training job {job['id']}?" in interrupted.stderr and "cancelled" in interrupted.stdout
    assert cli("jobs", "show", job["id"]).stdout.count("cancelled") >= 1

    # Ctrl-C, then no: the command leaves, the job keeps running until `jobs cancel`
    left, job = follow_and_interrupt(server, env, tmp_path, [*slow, "--model", "slower"], "n\n")
    assert left.returncode == 130, left.stdout + left.stderr
    assert f"mlplatform jobs show {job['id']} --follow" in left.stderr
    still = httpx.get(f"{server.base_url}/api/ml/training-jobs/{job['id']}", headers={"X-API-Key": ADMIN_KEY})
    assert still.json()["state"] == "running"
    assert "cancel requested" in cli("jobs", "cancel", job["id"]).stdout
    followed = cli("jobs", "show", job["id"], "--follow").stdout
    assert "cancelled" in followed
    assert "already cancelled" in cli("jobs", "cancel", job["id"]).stdout
    models = httpx.get(f"{server.base_url}/api/ml/models", headers={"X-API-Key": ADMIN_KEY}).json()
    assert [m["name"] for m in models["items"]] == ["quick"]
