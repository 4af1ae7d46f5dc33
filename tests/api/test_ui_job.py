"""The console's page of one training job through `create_app` on a real Dask cluster: a search job's
parameters, metrics, timings, trials (the best marked, the chart) as the training service gives them; a
running job's live part and Cancel."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.api.conftest import AppFactory
from tests.api.test_training_api import TERMINAL, app_with_dataset, job_body, scheduler, wait_for
from tests.api.test_ui import browser_of, create_key, csrf_of, sign_in

__all__ = ["scheduler"]  # a module fixture: one Dask LocalCluster for the jobs below


async def partial(browser: httpx.AsyncClient, path: str) -> httpx.Response:
    return await browser.get(path, headers={"HX-Request": "true"})


async def test_a_search_jobs_page_shows_its_trials_metrics_and_timings(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    search = {"strategy": "grid", "space": {"max_depth": {"choice": [2, 3, 4]}}}
    request = job_body(dataset, search=search, hyperparameters={"n_estimators": 20})
    submitted = await client.post("/api/ml/training-jobs", json=request)
    assert submitted.status_code == 202, submitted.text
    job = await wait_for(client, submitted.json()["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    trials = await platform.training.trials(job["id"])
    assert len(trials) == 3 and sum(t.best for t in trials) == 1
    best = next(t for t in trials if t.best)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        jobs = await browser.get("/ui/jobs")
        assert f'<a href="/ui/jobs/{job["id"]}"><code>{job["id"]}</code></a>' in jobs.text
        page = await browser.get(f"/ui/jobs/{job['id']}")
        assert page.status_code == 200 and 'aria-current="page">Training jobs' in page.text
        text = page.text
        assert f'href="/ui/datasets/{dataset}"' in text and "<strong>label</strong>" in text
        assert "<code>n_estimators=20</code>" in text and "<code>max_depth=3</code>" in text
        assert '<th scope="row">Seed</th><td>0 ' in text
        assert "grid, 3 trials" in text and "optimising <strong>f1</strong>" in text
        assert 'badge-job-succeeded">succeeded' in text and 'hx-trigger="every 2s"' not in text
        assert f'href="/ui/models/houses/versions/1">{job["version_id"]}</a>' in text
        for name, value in job["metrics"].items():
            assert f'<th scope="row">{name}</th><td class="num">{value:.4g}</td>' in text, name
        assert set(job["timings"]) >= {"read", "fit", "evaluate", "save", "register"}
        for phase, seconds in job["timings"].items():
            assert f'<th scope="row">{phase}</th><td class="num">{seconds:.3f}</td>' in text, phase
        for trial in trials:
            row = text[text.index(f'<th scope="row">{trial.number}') :]
            row = row[: row.index("</tr>")]
            assert f"<code>max_depth={trial.params['max_depth']}</code>" in row
            assert trial.value is not None and f'<td class="num">{trial.value:.4g}</td>' in row
            assert ("badge-production" in row) == trial.best
        assert f"the best is trial {best.number}" in text
        assert '<svg class="trials-chart"' in text
        assert text.count('<circle class="trial"') == 2 and text.count('<circle class="trial-best"') == 1
        assert f"trial {best.number}: {best.value:.4g} (best)" in text  # the chart's description
        assert "/cancel" not in text  # finished, and a viewer anyway
        assert (await browser.get("/ui/jobs/nope")).status_code == 404


async def test_a_running_job_refreshes_itself_and_an_editor_cancels_it_from_its_page(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler, rows=2000)
    long_body = job_body(dataset, hyperparameters={"n_estimators": 200_000, "max_depth": 6})
    running = (await client.post("/api/ml/training-jobs", json=long_body)).json()
    await wait_for(client, running["id"], {"running"})
    path = f"/ui/jobs/{running['id']}"
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get(path)
        assert 'hx-trigger="every 2s"' in page.text and "Cancel job" not in page.text
        refused = await browser.post(f"{path}/cancel", data={"csrf": csrf_of(page), "back": "job"})
        assert refused.status_code == 403 and "may not write" in refused.text
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get(path)
        assert "Cancel job" in page.text and "No metrics yet." in page.text
        async with asyncio.timeout(60):  # what htmx fetches every 2 s: the progress moves
            while not re.search(r"round \d+ of 200000", (live := await partial(browser, path)).text):
                await asyncio.sleep(0.2)
        assert "<html" not in live.text and 'id="job-live"' in live.text
        forged = await browser.post(f"{path}/cancel", data={"back": "job"})
        assert forged.status_code == 403 and "security token" in forged.text
        cancelled = await browser.post(f"{path}/cancel", data={"csrf": csrf_of(page), "back": "job"})
        assert cancelled.status_code == 303 and cancelled.headers["location"] == path
        assert (await wait_for(client, running["id"], TERMINAL))["state"] == "cancelled"
        after = await browser.get(path)
        assert 'badge-job-cancelled">cancelled' in after.text
        assert 'hx-trigger="every 2s"' not in after.text and "Cancel job" not in after.text
        assert "the job registered no version" in after.text
