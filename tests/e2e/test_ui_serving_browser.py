"""The serving pages in Debian's Chromium against `mlplatform serve`: predictions made through the API move
the page's count and charts without a reload (htmx swaps the live part, uPlot redraws), and feedback posted
for a prediction shows in its row.

Screenshots of the serving overview and a model's serving page go to docs/screenshots/; axe-core checks both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.e2e.conftest import ServerProcess
from tests.e2e.console import StartServer, check_page, chromium, create_key

ADMIN_KEY = "mlp_e2e-console-serving-admin-0123456789"
FEATURES = ["amount", "age", "merchant_risk", "hour", "country_risk", "device_age"]
LIVE_TIMEOUT_MS = 30_000  # the page polls every 5 s


def register(server: ServerProcess, folder: Path) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(400, len(FEATURES)))
    artifact = folder / "model.skops"
    skops.io.dump(LogisticRegression().fit(x, (x[:, 0] + x[:, 2] > 0).astype(int)), artifact)
    for name in ("fraud", "churn"):
        created = httpx.post(
            f"{server.base_url}/api/ml/models/{name}/versions",
            files={"file": ("model.skops", artifact.read_bytes(), "application/octet-stream")},
            data={"metadata": json.dumps({"feature_names": FEATURES, "description": "Card fraud score"})},
            headers={"X-API-Key": ADMIN_KEY},
            timeout=60,
        )
        assert created.status_code == 201, created.text
    return x


def api(server: ServerProcess, path: str, body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{server.base_url}{path}", json=body, headers={"X-API-Key": ADMIN_KEY}, timeout=60)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def predict(server: ServerProcess, rows: np.ndarray) -> list[dict[str, Any]]:
    return [api(server, "/api/ml/predict", {"model": "fraud", "features": row.tolist()}) for row in rows]


def test_the_prediction_count_moves_live_and_feedback_shows_in_chromium(
    start_server: StartServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = start_server(
        {
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "MLPLATFORM_ML__SERVING__STATS__FLUSH_SECONDS": "1",
        }
    )
    server.wait_for("/actuator/health/readiness")
    x = register(server, tmp_path)
    predict(server, x[:5])
    viewer = create_key(server.base_url, ADMIN_KEY, "viewer")

    with chromium(server.base_url) as browser:
        page = browser.page
        browser.sign_in(viewer, "/ui/serving")
        fraud = page.get_by_role("row", name=re.compile("^fraud"))
        expect(fraud.locator('[data-stat="predictions"]')).to_have_text("5")
        expect(page.get_by_role("row", name=re.compile("^churn"))).to_contain_text("no traffic")
        check_page(page, "serving-models")

        fraud.get_by_role("link", name="fraud").click()
        expect(page.get_by_role("heading", name="Serving fraud")).to_be_visible()
        count = page.locator('dd[data-stat="predictions"]')
        expect(count).to_have_text("5")
        expect(page.locator('[data-chart="traffic"] canvas')).to_have_count(1)
        expect(page.locator('[data-chart="latency"] canvas')).to_have_count(1)
        page.evaluate("() => { window.stillTheSamePage = true; }")  # gone if the page reloaded

        predict(server, x[5:12])
        batch = api(server, "/api/ml/predict/batch", {"model": "fraud", "instances": x[12:32].tolist()})
        expect(count).to_have_text("32", timeout=LIVE_TIMEOUT_MS)  # 5 + 7 + a batch of 20, no reload
        expect(page.locator('dd[data-stat="requests"]')).to_have_text("13")
        assert page.evaluate("() => window.stillTheSamePage") is True
        drawn = page.evaluate(
            "() => JSON.parse(document.getElementById('serving-live').dataset.series).predictions"
        )
        assert sum(drawn) == 32

        labelled = batch["predictions"][3]  # the page shows the newest 20: the batch's
        row = page.locator(f'tr[data-prediction="{labelled["prediction_id"]}"]')
        expect(row).to_contain_text("amount=")
        expect(row.locator("[data-feedback]")).to_contain_text("none yet")
        feedback = {"prediction_id": labelled["prediction_id"], "actual": 1 - labelled["prediction"]}
        assert api(server, "/api/ml/feedback", feedback)["accepted"] == 1
        expect(row.locator("[data-feedback]")).to_contain_text(
            str(1 - labelled["prediction"]), timeout=LIVE_TIMEOUT_MS
        )
        assert page.evaluate("() => window.stillTheSamePage") is True

        page.get_by_text("Per step, as a table").click()  # the numbers behind the charts
        expect(page.locator("#series-table tbody tr").first).to_contain_text("32")
        check_page(page, "serving")
