"""Monitoring and alerts in Debian's Chromium against `mlplatform serve`: the accuracy chart appears after
predictions and feedback, a drift check run from the page shows reference-vs-current histograms (and
drift once the inputs shift), and an alert that fired is acknowledged from the alerts page.

Screenshots of the monitoring overview, a model's monitoring page, its drift report and the alerts page go
to docs/screenshots/; axe-core checks each page.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.api.models import reference
from tests.e2e.console import StartServer, check_page, chromium, create_key

ADMIN_KEY = "mlp_e2e-console-monitoring-admin-0123456789"


def api(base_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = httpx.request(
        method, f"{base_url}{path}", headers={"X-API-Key": ADMIN_KEY}, timeout=60, **kwargs
    )
    assert response.status_code < 300, response.text
    return response


def predict(base_url: str, rows: np.ndarray) -> list[dict[str, Any]]:
    answer = api(
        base_url, "POST", "/api/ml/predict/batch", json={"model": "fraud", "instances": rows.tolist()}
    )
    return list(answer.json()["predictions"])


def wait_logged(base_url: str, count: int) -> None:
    """The prediction log is written behind the answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logs = api(base_url, "GET", "/api/ml/predictions", params={"model": "fraud", "limit": 10_000}).json()
        if len(logs) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} predictions logged")


def test_accuracy_drift_and_acknowledging_an_alert_in_chromium(
    start_server: StartServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = start_server(
        {
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "MLPLATFORM_ML__MONITORING__ENABLED": "false",  # checks run when the test asks
        }
    )
    server.wait_for("/actuator/health/readiness")
    base = server.base_url
    ref = reference("sklearn-forest-skops", tmp_path / "refs")
    metadata = {**ref.metadata, "reference_sample": ref.X.tolist()}
    files = {"file": (ref.path.name, ref.path.read_bytes(), "application/octet-stream")}
    api(base, "POST", "/api/ml/models/fraud/versions", files=files, data={"metadata": json.dumps(metadata)})
    editor = create_key(base, ADMIN_KEY, "editor")

    with chromium(base) as browser:
        page = browser.page
        browser.sign_in(editor, "/ui/models/fraud/monitoring")
        expect(page.get_by_text("No prediction of fraud was logged")).to_be_visible()

        answers = predict(base, ref.X)  # 90 rows
        wait_logged(base, 90)
        # 60 labelled: 30 right, 30 wrong; accuracy 0.5 is below the default rule's 0.8
        labels = [
            {"prediction_id": a["prediction_id"], "actual": a["prediction"] if i % 2 else 1 - a["prediction"]}
            for i, a in enumerate(answers[:60])
        ]
        assert api(base, "POST", "/api/ml/feedback", json=labels).json()["accepted"] == 60
        page.reload()
        chart = page.get_by_role("img", name=re.compile("^Accuracy and macro F1"))
        expect(chart).to_be_visible()
        expect(chart.locator("circle")).to_have_count(2)  # one bucket: accuracy and F1
        row = page.get_by_role("row", name=re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d"))
        expect(row).to_contain_text("90")
        expect(row).to_contain_text("66.7 %")
        expect(row.locator("td").nth(4)).to_have_text("0.5")

        page.get_by_label("Inputs of the last").select_option("24h")
        page.get_by_role("button", name="Run drift check now").click()
        expect(page).to_have_url(re.compile(r"/ui/models/fraud/monitoring\?window=24h&report=\w+#drift-h$"))
        expect(page.get_by_role("heading", name=re.compile("no drift"))).to_be_visible()
        features = ref.X.shape[1]
        expect(page.locator("svg.drift-histogram")).to_have_count(features)
        expect(
            page.get_by_role("img", name=re.compile(r"share of rows per cell: .*reference .* %, current"))
        ).to_have_count(features)
        check_page(page, "monitoring")

        shifted = ref.X.copy()
        shifted[:, 0] = shifted[:, 0] * 3 + 5  # the first feature moves far from its reference
        predict(base, shifted)
        wait_logged(base, 180)
        page.get_by_role("button", name="Run drift check now").click()
        expect(page.get_by_role("heading", name=re.compile("drift Report of"))).to_be_visible()
        expect(page.get_by_role("row", name=re.compile("^f0")).locator(".badge-drift")).to_be_visible()
        expect(page.get_by_role("table", name="The newest 2 reports")).to_be_visible()
        check_page(page, "drift")

        page.get_by_role("navigation", name="Console").get_by_role("link", name="Monitoring").click()
        expect(page.get_by_role("row", name=re.compile("^fraud"))).to_contain_text("drift")
        check_page(page, "monitoring-overview")

        page.get_by_role("navigation", name="Console").get_by_role("link", name="Alerts").click()
        expect(page.get_by_text("No alert has fired yet")).to_be_visible()
        assert api(base, "POST", "/api/ml/monitoring/check").json()["started"] >= 1
        # no reload: the rows refresh themselves (htmx, every 15 s)
        firing = page.get_by_role("region", name="Alerts").get_by_role(
            "row", name=re.compile("^ModelAccuracyDegraded")
        )
        expect(firing.locator(".badge-alert-firing")).to_be_visible(timeout=25_000)
        expect(firing).to_contain_text("fraud: accuracy 0.500 is below 0.8")
        firing.get_by_role("button", name=re.compile("^Acknowledge")).click()
        expect(page).to_have_url(f"{base}/ui/alerts")
        acked = page.get_by_role("region", name="Alerts").get_by_role(
            "row", name=re.compile("^ModelAccuracyDegraded")
        )
        expect(acked.locator(".badge-alert-acknowledged")).to_be_visible()
        expect(acked).to_contain_text("acknowledged")
        expect(acked.get_by_role("button", name=re.compile("^Acknowledge"))).to_have_count(0)
        page.get_by_label("State").select_option("firing")
        page.get_by_role("button", name="Filter").click()
        shown = page.get_by_role("region", name="Alerts")
        expect(shown.get_by_role("row", name=re.compile("^ModelDriftDetected"))).to_be_visible()  # f0 drifted
        expect(shown.get_by_role("row", name=re.compile("^ModelAccuracyDegraded"))).to_have_count(0)
        page.get_by_label("State").select_option("acknowledged")
        page.get_by_role("button", name="Filter").click()
        expect(
            page.get_by_role("region", name="Alerts").get_by_role(
                "row", name=re.compile("^ModelAccuracyDegraded")
            )
        ).to_be_visible()
        check_page(page, "alerts")
    alerts = api(base, "GET", "/api/ml/alerts").json()["items"]
    states = {a["rule"]: (a["state"], a["acknowledged_by"]) for a in alerts}
    assert states["ModelDriftDetected"] == ("firing", None)
    assert (
        states["ModelAccuracyDegraded"][0] == "acknowledged"
        and "web console" in states["ModelAccuracyDegraded"][1]
    )
