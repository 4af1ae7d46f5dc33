"""The web console in a real browser: Debian's Chromium, driven by Playwright, against `mlplatform serve`.

Signs in, searches, stages a version and points an alias through the pages, sees the badges change, signs
out; saves a screenshot of every page to docs/screenshots/ and runs axe-core on each (serious or critical
violations fail the test).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.e2e.conftest import REPO, ServerProcess

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-console-admin-key-0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / ".cache" / "ui-assets" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "docs" / "screenshots"
FEATURES = ["amount", "age", "merchant_risk", "hour"]


def register(server: ServerProcess, folder: Path) -> None:
    x = np.random.default_rng(0).normal(size=(400, len(FEATURES)))
    artifact = folder / "model.skops"
    skops.io.dump(LogisticRegression().fit(x, (x[:, 0] + x[:, 2] > 0).astype(int)), artifact)
    headers = {"X-API-Key": ADMIN_KEY}
    first = {
        "feature_names": FEATURES,
        "description": "Card fraud score",
        "metrics": {"auc": 0.912, "f1": 0.874},
        "reference_sample": x[:300].tolist(),
    }
    for name, metadata in (
        ("fraud", first),
        ("fraud", {"feature_names": FEATURES, "parent": "fraud/1", "metrics": {"auc": 0.927}}),
        ("churn", {"feature_names": FEATURES}),
    ):
        created = httpx.post(
            f"{server.base_url}/api/ml/models/{name}/versions",
            files={"file": ("model.skops", artifact.read_bytes(), "application/octet-stream")},
            data={"metadata": json.dumps(metadata)},
            headers=headers,
            timeout=60,
        )
        assert created.status_code == 201, created.text
    predicted = httpx.post(
        f"{server.base_url}/api/ml/predict",
        json={"model": "fraud", "features": x[0].tolist()},
        headers=headers,
        timeout=60,
    )
    assert predicted.status_code == 200, predicted.text


def create_key(server: ServerProcess, role: str) -> str:
    created = httpx.post(
        f"{server.base_url}/api/admin/api-keys",
        json={"name": f"console {role}", "role": role, "owner": f"ada-{role}"},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def check_page(page: Any, name: str) -> None:
    """A screenshot for the README, and axe-core's serious and critical violations, which fail the test."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    report = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}" for v in bad
    ]
    assert not bad, f"axe-core on the {name} page:\n" + "\n".join(report)


def test_sign_in_stage_alias_and_sign_out_in_chromium(start_server: StartServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make chromium` installs Debian's package", pytrace=False)
    if not AXE.exists():
        pytest.fail(f"no {AXE}: `make ui-assets` installs axe-core", pytrace=False)
    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    register(server, tmp_path)
    editor = create_key(server, "editor")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        # axe-core is injected as a script: the pages' own policy allows none but their own files.
        context = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

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
        assert not errors, errors
        browser.close()
