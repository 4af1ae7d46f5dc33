"""The web console in a real browser: Debian's Chromium, driven by Playwright, against `mlplatform serve`.

Signs in, uploads a model through its form, searches, stages a version and points an alias through the
pages, sees the badges change, signs out; saves a screenshot of every page to docs/screenshots/ and runs
axe-core on each (serious or critical violations fail the test).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.e2e.conftest import ServerProcess
from tests.e2e.console import StartServer, check_page, chromium, create_key

ADMIN_KEY = "mlp_e2e-console-admin-key-0123456789abcdef"
FEATURES = ["amount", "age", "merchant_risk", "hour"]


def artifacts(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A fraud model's skops file, a CSV of its training rows (the reference sample), and those rows."""
    x = np.random.default_rng(0).normal(size=(400, len(FEATURES)))
    artifact = folder / "model.skops"
    skops.io.dump(LogisticRegression().fit(x, (x[:, 0] + x[:, 2] > 0).astype(int)), artifact)
    sample = folder / "reference.csv"
    rows = "\n".join(",".join(f"{v:.6f}" for v in row) for row in x[:300])
    sample.write_text(",".join(FEATURES) + "\n" + rows + "\n")
    return artifact, sample, x


def register(server: ServerProcess, artifact: Path, name: str, metadata: dict[str, object]) -> None:
    created = httpx.post(
        f"{server.base_url}/api/ml/models/{name}/versions",
        files={"file": ("model.skops", artifact.read_bytes(), "application/octet-stream")},
        data={"metadata": json.dumps(metadata)},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=60,
    )
    assert created.status_code == 201, created.text


def test_sign_in_stage_alias_and_sign_out_in_chromium(start_server: StartServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    artifact, sample, x = artifacts(tmp_path)
    register(server, artifact, "churn", {"feature_names": FEATURES})
    editor = create_key(server.base_url, ADMIN_KEY, "editor")

    with chromium(server.base_url) as browser:
        page = browser.page
        page.goto(f"{server.base_url}/ui/models")
        expect(page).to_have_url(f"{server.base_url}/ui/login?next=%2Fui%2Fmodels")
        check_page(page, "sign-in")
        page.keyboard.press("Tab")  # keyboard first: the skip link, the home link, the key field
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_label("API key")).to_be_focused()
        page.keyboard.type(editor)  # signed in with the keyboard alone
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.base_url}/ui/models")
        expect(page.get_by_role("link", name="churn", exact=True)).to_be_visible()

        page.get_by_role("link", name="Upload a model").click()  # the first fraud version, from the browser
        page.get_by_label("Model name").fill("fraud")
        page.get_by_label("Artifact file").set_input_files(str(artifact))
        page.get_by_label("Description").fill("Card fraud score")
        page.get_by_label("Feature names").fill(", ".join(FEATURES))
        page.get_by_label("Reference sample").set_input_files(str(sample))
        check_page(page, "upload-model")
        page.get_by_role("button", name="Upload").click()
        expect(page).to_have_url(f"{server.base_url}/ui/models/fraud/versions/1")
        expect(page.get_by_role("heading", name="fraud v1")).to_be_visible()
        expect(page.get_by_text("Card fraud score")).to_be_visible()
        register(server, artifact, "fraud", {"feature_names": FEATURES, "parent": "fraud/1"})
        predicted = httpx.post(
            f"{server.base_url}/api/ml/predict",
            json={"model": "fraud", "features": x[0].tolist()},
            headers={"X-API-Key": ADMIN_KEY},
            timeout=60,
        )
        assert predicted.status_code == 200, predicted.text
        page.get_by_role("link", name="Models", exact=True).first.click()
        expect(page.get_by_role("link", name="fraud", exact=True)).to_be_visible()

        page.get_by_label("Name starts with").fill("zz")  # htmx: the rows change without a page load
        expect(page.get_by_text("No model matches")).to_be_visible()
        page.get_by_label("Name starts with").fill("")
        expect(page.get_by_role("link", name="churn", exact=True)).to_be_visible()
        check_page(page, "models")

        page.get_by_role("link", name="fraud", exact=True).click()
        expect(page.get_by_role("heading", name="fraud", exact=True)).to_be_visible()
        page.get_by_label("Stage of v1").select_option("production")
        page.get_by_role("button", name="Set stage of v1").click()
        expect(page.locator(".facts .badge-production")).to_have_text("production: v1")
        page.get_by_label("Alias", exact=True).fill("challenger")
        page.get_by_label("Version", exact=True).select_option("2")
        page.get_by_role("button", name="Point alias").click()
        expect(page.locator(".facts .badge-alias")).to_have_text("challenger: v2")
        expect(page.locator(".timeline")).to_contain_text("challenger")
        check_page(page, "model")

        page.get_by_role("link", name="v1", exact=True).first.click()
        expect(page.get_by_role("heading", name="fraud v1")).to_be_visible()
        expect(page.locator("svg.histogram")).to_have_count(len(FEATURES))
        check_page(page, "version")

        page.get_by_role("link", name="Models", exact=True).first.click()
        expect(page.locator("tr", has_text="fraud").locator(".badge-production")).to_have_text(
            "production: v1"
        )

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You signed out")).to_be_visible()
        page.goto(f"{server.base_url}/ui/models/fraud")
        expect(page).to_have_url(f"{server.base_url}/ui/login?next=%2Fui%2Fmodels%2Ffraud")
