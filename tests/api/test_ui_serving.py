"""The console's serving pages through `create_app`: every model's traffic, a model's series (JSON for uPlot),
totals and recent predictions with their feedback, the htmx fragments, sessions and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from mlplatform.ui.serving import inputs_summary
from tests.api.conftest import AppFactory
from tests.api.test_serving_api import poll_logs, predict, registered
from tests.api.test_ui import browser_of, create_key, sign_in

SERIES = re.compile(r"data-series='([^']*)'")


def stat(page: httpx.Response, name: str) -> str:
    found = re.search(rf'data-stat="{name}">([^<]*)<', page.text)
    assert found, page.text[:3000]
    return found.group(1).strip()


async def test_a_viewer_sees_every_models_traffic_and_a_models_series_and_recent_predictions(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    ref = await registered(client, tmp_path)
    await registered(client, tmp_path, name="idle")
    answers = [(await predict(client, "m", ref.X[i].tolist())).json() for i in range(3)]
    batch = await client.post("/api/ml/predict/batch", json={"model": "m", "instances": ref.X[:10].tolist()})
    assert batch.status_code == 200
    await poll_logs(client, "m", 13)  # the log is written in batches behind the answers
    feedback = await client.post(
        "/api/ml/feedback",
        json={"prediction_id": answers[0]["prediction_id"], "actual": answers[0]["prediction"]},
    )
    assert feedback.status_code == 200 and feedback.json()["accepted"] == 1, feedback.text
    viewer = await create_key(client, "viewer")
    async with browser_of(client) as browser:
        await sign_in(browser, viewer["key"])
        overview = await browser.get("/ui/serving")
        assert overview.status_code == 200
        assert 'aria-current="page">Serving' in overview.text
        assert stat(overview, "predictions") == "13"
        assert "no traffic in the last 1h" in overview.text  # the idle model
        assert 'href="/ui/serving/m?window=1h"' in overview.text
        assert "uPlot" not in overview.text  # only a page that charts loads the chart library

        page = await browser.get("/ui/serving/m")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/ui/static/vendor/uPlot.iife.min.js" defer></script>' in page.text
        assert '<script src="/ui/static/serving.js" defer></script>' in page.text
        assert (stat(page, "predictions"), stat(page, "requests")) == ("13", "4")
        found = SERIES.search(page.text)
        assert found, page.text[:3000]
        series = json.loads(found.group(1))
        assert series["step"] == 60 and sum(series["predictions"]) == 13 and sum(series["errors"]) == 0
        assert len(series["t"]) == len(series["p99"]) and series["p50"][-1] > 0
        assert series["p50"][0] is None  # a step without requests has no percentile
        # Recent predictions: newest first, each with its feedback (the labelled one shows its value).
        rows = re.findall(r'<tr data-prediction="([0-9a-f]{26})">(.*?)</tr>', page.text, re.S)
        assert len(rows) == 13
        by_id = dict(rows)
        labelled = by_id[answers[0]["prediction_id"]]
        assert f"<strong>{answers[0]['prediction']}</strong>" in labelled.split("data-feedback")[1]
        assert "none yet" in by_id[answers[1]["prediction_id"]]
        assert re.search(
            r"f0=[-0-9.e]+, f1=[-0-9.e]+, f2=[-0-9.e]+, f3=[-0-9.e]+<", labelled
        )  # inputs by name
        assert 'href="/ui/models/m/versions/1"' in labelled
        # htmx asks for the live part alone.
        fragment = await browser.get("/ui/serving/m", headers={"HX-Request": "true"})
        assert fragment.text.lstrip().startswith('<div id="serving-live"') and "<html" not in fragment.text
        rows_only = await browser.get("/ui/serving?window=15m", headers={"HX-Request": "true"})
        assert rows_only.text.lstrip().startswith('<div id="serving-rows"')
        week = await browser.get("/ui/serving/m?window=7d")
        assert json.loads(SERIES.search(week.text).group(1))["step"] == 3600  # type: ignore[union-attr]


async def test_no_session_goes_to_sign_in_and_bad_input_is_an_error_page(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    await registered(client, tmp_path)
    for path in ("/ui/serving", "/ui/serving/m"):
        response = await client.get(path)  # an API key is no session
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login?next=" + path.replace("/", "%2F"))
    viewer = await create_key(client, "viewer")
    async with browser_of(client) as browser:
        await sign_in(browser, viewer["key"])
        unknown = await browser.get("/ui/serving/nobody")
        assert unknown.status_code == 404 and "no model named" in unknown.text
        assert "<html" in unknown.text
        for path in ("/ui/serving?window=2y", "/ui/serving/m?window=forever"):
            bad = await browser.get(path)
            assert bad.status_code == 422 and "window:" in bad.text, path
        bad_name = await browser.get("/ui/serving/m-v2")
        assert bad_name.status_code == 422
        empty = await browser.get("/ui/serving/m")
        assert empty.status_code == 200 and "No prediction of m is logged yet" in empty.text
        assert "No traffic in the window." in empty.text


def test_inputs_are_summarised_by_name_the_first_four_rounded() -> None:
    names = ("amount", "age", "city", "risk", "hour", "device")
    values = [12.3456789, 41, "Lyon", 1e-7, 23, "ios"]
    assert inputs_summary(values, names) == "amount=12.35, age=41, city=Lyon, risk=1e-07, … (2 more)"
    assert inputs_summary([0.5, 2], ()) == "0.5, 2"  # a version no longer registered: values alone
