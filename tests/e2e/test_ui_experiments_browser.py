"""Experiments, API keys and a training job's page in Debian's Chromium against `mlplatform serve`.

An A/B test with real traffic and feedback: its page recommends the better variant, **Promote** moves the
model's `production` to its version. An admin creates an API key (shown once), then revokes it. A search job's
page follows it live until its trials are drawn. Screenshots of the experiments, experiment, api-keys and job
pages go to docs/screenshots/; axe-core checks each page.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.e2e.console import StartServer, check_page, chromium, create_key

ADMIN_KEY = "mlp_e2e-console-experiments-admin-0123456789"
FEATURES = ["amount", "age", "merchant_risk", "hour"]
JOB_TIMEOUT_MS = 120_000  # the embedded cluster starts with the first job


def api(base_url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, base_url + path, headers={"X-API-Key": ADMIN_KEY}, timeout=60, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def experiment_with_traffic(base_url: str, folder: Path) -> str:
    """fraud v1 and v2 in an A/B test on accuracy; 240 predictions with feedback: v2 (variant
    "challenger") always right, v1 right 60 % of the time, so the service recommends the challenger."""
    x = np.random.default_rng(0).normal(size=(400, len(FEATURES)))
    for version, labels in ((1, x[:, 0] > 0), (2, x[:, 0] + x[:, 2] > 0)):
        artifact = folder / f"v{version}.skops"
        skops.io.dump(LogisticRegression().fit(x, labels.astype(int)), artifact)
        files = {"file": ("model.skops", artifact.read_bytes(), "application/octet-stream")}
        metadata = {"feature_names": FEATURES, "description": "Card fraud score"}
        api(
            base_url,
            "POST",
            "/api/ml/models/fraud/versions",
            files=files,
            data={"metadata": json.dumps(metadata)},
        )
    api(base_url, "POST", "/api/ml/models/fraud/versions/1/stage", json={"stage": "production"})
    body = {
        "name": "fraud v2 vs v1",
        "model": "fraud",
        "type": "ab",
        "variants": [
            {"name": "current", "version": "1", "weight": 50},
            {"name": "challenger", "version": "2", "weight": 50},
        ],
        "metric": "accuracy",
        "min_samples": 50,
    }
    experiment = api(base_url, "POST", "/api/ml/experiments", json=body)
    answers = [
        api(
            base_url,
            "POST",
            "/api/ml/predict",
            json={"model": "fraud", "features": x[i].tolist(), "request_id": f"card-{i}"},
        )
        for i in range(240)
    ]
    deadline = time.monotonic() + 30
    while len(api(base_url, "GET", "/api/ml/predictions", params={"model": "fraud", "limit": 1000})) < 240:
        assert time.monotonic() < deadline, "the prediction log was not written"
        time.sleep(0.2)
    feedback = []
    for i, answer in enumerate(answers):
        right = answer["variant"] == "challenger" or i % 5 < 3
        actual = answer["prediction"] if right else 1 - int(answer["prediction"])
        feedback.append({"prediction_id": answer["prediction_id"], "actual": actual})
    api(base_url, "POST", "/api/ml/feedback", json=feedback)
    return str(experiment["id"])


def upload_dataset(base_url: str) -> str:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 3))
    label = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=1000) > 0, "yes", "no")
    rows = "\n".join(f"{a:.5f},{b:.5f},{c:.5f},{y}" for (a, b, c), y in zip(x, label, strict=True))
    files = {"file": ("loans.csv", f"income,debt,age,label\n{rows}\n".encode())}
    return str(api(base_url, "POST", "/api/ml/datasets", files=files, data={"name": "loans"})["id"])


def test_promote_an_experiment_manage_keys_and_follow_a_search_job_in_chromium(
    start_server: StartServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    base = server.base_url
    experiment_id = experiment_with_traffic(base, tmp_path)
    admin = create_key(base, ADMIN_KEY, "admin", owner="ada")

    with chromium(base) as browser:
        page = browser.page
        browser.sign_in(admin, "/ui/experiments")
        row = page.get_by_role("row", name=re.compile("fraud v2 vs v1"))
        expect(row).to_contain_text("A/B test")
        expect(row).to_contain_text("running")
        check_page(page, "experiments")

        page.get_by_role("link", name="fraud v2 vs v1").click()
        expect(page).to_have_url(f"{base}/ui/experiments/{experiment_id}")
        expect(page.locator(".advice")).to_contain_text("Promote challenger")
        expect(page.locator("svg.forest")).to_have_count(6)  # error rate, accuracy, 3 latencies, difference
        expect(page.get_by_label("Variant to promote")).to_have_value("challenger")
        check_page(page, "experiment")
        page.get_by_role("button", name="Promote").click()
        expect(page.locator("h1 .badge")).to_have_text("promoted")
        expect(page.get_by_role("button", name="Promote")).to_have_count(0)
        page.get_by_role("link", name="fraud", exact=True).first.click()
        expect(page.locator(".facts .badge-production")).to_have_text("production: v2")

        page.get_by_role("link", name="API keys").click()
        expect(page.get_by_role("row", name=re.compile("^console admin"))).to_contain_text("your session")
        page.get_by_label("Name", exact=True).fill("reporting")
        page.get_by_label("Owner").fill("bi team")
        page.get_by_label("Role", exact=True).select_option("viewer")
        page.get_by_label("Expires in days").fill("90")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_role("heading", name="Key “reporting” created")).to_be_visible()
        shown = page.get_by_label("API key of bi team (viewer)").input_value()
        assert shown.startswith("mlp_")
        page.get_by_role("button", name="Copy").click()  # shown by copy.js; copies, or selects the text
        expect(page.locator("[data-copied-for]")).to_have_text(re.compile("Copied|Selected"))
        assert httpx.get(f"{base}/api/ml/models", headers={"X-API-Key": shown}, timeout=30).status_code == 200
        reporting = page.get_by_role("row", name=re.compile("^reporting"))
        reporting.get_by_text("Revoke…").click()
        reporting.get_by_role("button", name="Revoke key reporting").click()
        expect(page).to_have_url(re.compile(r"/ui/api-keys\?revoked=true"))
        revoked = page.get_by_role("row", name=re.compile("^reporting"))
        expect(revoked.locator("td").nth(7).locator("time")).to_have_count(1)  # the Revoked column
        expect(revoked.get_by_text("Revoke…")).to_have_count(0)
        assert shown not in page.content()  # shown once only
        assert httpx.get(f"{base}/api/ml/models", headers={"X-API-Key": shown}, timeout=30).status_code == 401
        check_page(page, "api-keys")

        dataset = upload_dataset(base)
        job = api(
            base,
            "POST",
            "/api/ml/training-jobs",
            json={
                "model": "loans",
                "dataset": dataset,
                "target": "label",
                "algorithm": "random_forest",
                "hyperparameters": {"n_estimators": 10},
                "search": {"strategy": "grid", "space": {"max_depth": {"choice": [2, 4, 6, 8]}}},
            },
        )
        page.get_by_role("link", name="Training jobs").click()
        page.get_by_role("link", name=job["id"]).click()
        expect(page).to_have_url(f"{base}/ui/jobs/{job['id']}")
        # htmx refreshes the live part every 2 s until the job ends: no reload here.
        expect(page.locator(".job-state .badge-job-succeeded")).to_be_visible(timeout=JOB_TIMEOUT_MS)
        expect(page.locator("svg.trials-chart circle")).to_have_count(4)
        expect(page.get_by_role("row", name=re.compile(r"^\d+ best"))).to_have_count(1)
        expect(page.get_by_role("link", name=re.compile("^loans-v1-"))).to_be_visible()
        check_page(page, "job")
