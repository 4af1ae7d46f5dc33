"""Training from the web console in Debian's Chromium against `mlplatform serve` (its embedded Dask cluster):
a dataset's page starts a job through its form, the jobs page follows it live, and Cancel ends a long one.

Screenshots of the datasets, dataset and jobs pages go to docs/screenshots/; axe-core checks each page.
"""

from __future__ import annotations

import re

import httpx
import numpy as np

from tests.e2e.console import StartServer, check_page, chromium, create_key

ADMIN_KEY = "mlp_e2e-console-training-admin-0123456789"
JOB_TIMEOUT_MS = 90_000  # the embedded cluster starts with the first job


def upload_dataset(base_url: str) -> str:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 3))
    label = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=2000) > 0, "yes", "no")
    rows = "\n".join(f"{a:.5f},{b:.5f},{c:.5f},{y}" for (a, b, c), y in zip(x, label, strict=True))
    created = httpx.post(
        f"{base_url}/api/ml/datasets",
        files={"file": ("loans.csv", f"income,debt,age,label\n{rows}\n".encode())},
        data={"name": "loans", "description": "Loan applications, labelled by outcome"},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_train_from_a_dataset_follow_and_cancel_in_chromium(start_server: StartServer) -> None:
    from playwright.sync_api import expect

    server = start_server({"MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY})
    server.wait_for("/actuator/health/readiness")
    base = server.base_url
    upload_dataset(base)
    editor = create_key(base, ADMIN_KEY, "editor")

    with chromium(base) as browser:
        page = browser.page
        browser.sign_in(editor, "/ui/datasets")
        check_page(page, "datasets")

        page.get_by_role("link", name="loans", exact=True).click()
        expect(page.get_by_role("heading", name=re.compile("^loans"))).to_be_visible()
        expect(page.get_by_role("row", name=re.compile("^income"))).to_contain_text("double")
        page.get_by_label("Target column").select_option("label")
        page.get_by_label("Algorithm").select_option("random_forest")
        page.get_by_label("Model name").fill("loans")
        page.get_by_label("Hyperparameters").fill("n_trees=5")  # not a parameter: the form says so
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_role("alert")).to_contain_text("hyperparameters: n_trees")
        check_page(page, "dataset")
        page.get_by_label("Hyperparameters").fill("n_estimators=5\nmax_depth=4")
        page.get_by_role("button", name="Start training").click()
        expect(page).to_have_url(f"{base}/ui/jobs")
        finished = page.locator("tbody tr").first
        # htmx polls the table while the job is queued or running, so it turns succeeded with no reload.
        expect(finished.locator(".badge-job-succeeded")).to_be_visible(timeout=JOB_TIMEOUT_MS)
        expect(finished.get_by_role("link", name=re.compile("^loans-v1-"))).to_be_visible()

        page.goto(f"{base}/ui/datasets")
        page.get_by_role("link", name="loans", exact=True).click()
        page.get_by_label("Target column").select_option("label")
        page.get_by_label("Algorithm").select_option("xgboost")
        page.get_by_label("Hyperparameters").fill("n_estimators=200000\nmax_depth=6")
        page.get_by_role("button", name="Start training").click()
        expect(page).to_have_url(f"{base}/ui/jobs")
        long_job = page.locator("tbody tr").first
        expect(long_job.locator(".badge-job-running")).to_be_visible(timeout=JOB_TIMEOUT_MS)
        expect(long_job).to_contain_text(re.compile(r"round \d+ of 200000"), timeout=JOB_TIMEOUT_MS)
        long_job.get_by_role("button", name=re.compile("^Cancel")).click()
        expect(page).to_have_url(f"{base}/ui/jobs")
        expect(page.locator("tbody tr").first.locator(".badge-job-cancelled")).to_be_visible(
            timeout=JOB_TIMEOUT_MS
        )
        expect(page.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
        check_page(page, "jobs")
