"""`mlplatform feedback send` and `mlplatform monitor show|drift|alerts|ack` against the real server."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sklearn.metrics import accuracy_score

from tests.api.models import reference
from tests.e2e.conftest import ServerProcess, run_cli

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-cli-bootstrap-admin-key-0123456789"


def test_feedback_from_a_csv_moves_the_model_accuracy(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    env = {"MLPLATFORM_URL": server.base_url, "MLPLATFORM_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    ref = reference("xgboost-ubj", tmp_path / "refs")
    headers = {"X-API-Key": ADMIN_KEY}

    def cli(*args: str) -> str:
        result = run_cli(list(args), env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    cli("models", "upload", "fraud", str(ref.path))
    rows = ref.X[:40].tolist()
    answer = httpx.post(
        f"{server.base_url}/api/ml/predict/batch",
        json={"model": "fraud", "instances": rows},
        headers=headers,
        timeout=30,
    ).json()
    predictions = answer["predictions"]
    # half the labels agree with the model, half do not; one id was never predicted
    actuals = [p["prediction"] if i % 2 else 1 - int(p["prediction"]) for i, p in enumerate(predictions)]
    source = tmp_path / "labels.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prediction_id", "actual"])
        writer.writerows([p["prediction_id"], a] for p, a in zip(predictions, actuals, strict=True))
        writer.writerow(["01J0000000000000000000NONE", 1])
    deadline = time.monotonic() + 30  # prediction logs are written behind the answers
    while time.monotonic() < deadline:
        logged = httpx.get(
            f"{server.base_url}/api/ml/predictions", params={"model": "fraud"}, headers=headers
        )
        if len(logged.json()) >= len(predictions):
            break
        time.sleep(0.2)

    sent = cli("feedback", "send", str(source), "--batch-size", "15")
    assert "accepted" in sent and "40" in sent and "01J0000000000000000000NONE" in sent

    shown = cli("monitor", "show", "fraud", "--window", "1h")
    expected = accuracy_score(actuals, [p["prediction"] for p in predictions])
    assert "labelled 40" in shown and "accuracy" in shown and f"{expected:.4g}" in shown
    timeline = cli("monitor", "timeline", "fraud", "--window", "24h")
    assert "in buckets of 1h" in timeline and "labelled 40 (100.0%)" in timeline
    assert f"accuracy {expected:.4g}" in timeline and "f1_macro" in timeline
    every = cli("monitor", "timeline", "fraud", "--window", "2h", "--bucket", "30m", "--all")
    filled = cli("monitor", "timeline", "fraud", "--window", "2h", "--bucket", "30m")
    assert (
        "buckets of 30m" in every and len(every.splitlines()) >= len(filled.splitlines()) + 3
    )  # 4 or 5 buckets

    # accuracy 0.5 is below the default threshold (0.8): a check raises ModelAccuracyDegraded
    assert (
        httpx.post(f"{server.base_url}/api/ml/monitoring/check", headers=headers, timeout=60).status_code
        == 200
    )
    listed = cli("monitor", "alerts", "--state", "firing")
    assert "ModelAccuracyDegraded" in listed and "fraud" in listed
    alert_id = httpx.get(f"{server.base_url}/api/ml/alerts", headers=headers).json()["items"][0]["id"]
    assert "acknowledged" in cli("monitor", "ack", alert_id)
    assert "acknowledged" in cli("monitor", "alerts", "--model", "fraud")
    assert "ModelAccuracyDegraded" in cli("monitor", "alerts", "--severity", "warning")
    assert "0 alerts" in cli("monitor", "alerts", "--severity", "critical")

    missing = run_cli(["monitor", "drift", "fraud"], env, tmp_path)
    assert missing.returncode == 1 and "--check" in missing.stderr
    names = [
        f["name"]
        for f in httpx.get(f"{server.base_url}/api/ml/models/fraud/versions/1", headers=headers).json()[
            "features"
        ]
    ]
    reference_rows = [dict(zip(names, row, strict=True)) for row in ref.X.tolist()]
    put = httpx.put(
        f"{server.base_url}/api/ml/models/fraud/versions/1/reference",
        json={"rows": reference_rows},
        headers=headers,
        timeout=30,
    )
    assert put.status_code == 200, put.text
    plot = tmp_path / "drift.png"
    checked = cli("monitor", "drift", "fraud", "--check", "--window", "1h", "--plot", str(plot))
    assert "no drift" in checked and all(name in checked for name in names)
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "no drift" in cli("monitor", "drift", "fraud")

    bad = tmp_path / "bad.csv"
    bad.write_text("id,actual\nx,1\n")
    refused = run_cli(["feedback", "send", str(bad)], env, tmp_path)
    assert refused.returncode == 2 and "prediction_id" in refused.stderr
