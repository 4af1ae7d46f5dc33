"""The console's monitoring pages and alerts page through `create_app`: what a viewer sees, the numbers
being the services' own, drift checks and acknowledging for editors only (with the session's CSRF token),
rules made and removed, and bad filters answered with a 422 page naming the field."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplatform.clock import utcnow
from mlplatform.platform import Platform
from tests.api.conftest import AppFactory
from tests.api.models import Reference
from tests.api.test_monitoring_api import batch, logged, registered, send
from tests.api.test_monitoring_timeline import logged_at
from tests.api.test_ui import browser_of, create_key, csrf_of, register, sign_in

NO_SCHEDULE = {"monitoring": {"enabled": False}}  # checks run only when a test asks


async def with_feedback(
    client: httpx.AsyncClient, platform: Platform, tmp_path: Path, served: int = 2
) -> tuple[Reference, list[dict[str, Any]]]:
    """`clf` (v1 with a reference sample, v2 without), 40 predictions of the `served` version (by the bare
    name), 30 of them labelled, 10 wrongly."""
    ref = await register(client, tmp_path)
    if served == 1:
        await serve_v1(client, platform)
    answers = (await batch(client, "clf", ref.X[:40]))["predictions"]
    await logged(client, "clf", 40)
    labels = [
        {"prediction_id": a["prediction_id"], "actual": a["prediction"] if i >= 10 else 1 - a["prediction"]}
        for i, a in enumerate(answers[:30])
    ]
    assert (await send(client, labels)).json()["accepted"] == 30
    return ref, answers


async def test_a_viewer_sees_accuracy_over_time_and_the_latest_drift_report(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml=NO_SCHEDULE)
    await with_feedback(client, platform, tmp_path, served=1)
    checked = await client.post("/api/ml/models/clf/drift-check")
    assert checked.status_code == 200, checked.text
    report = checked.json()
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        overview = await browser.get("/ui/monitoring")
        assert overview.status_code == 200 and 'aria-current="page">Monitoring' in overview.text
        assert 'href="/ui/models/clf/monitoring"' in overview.text
        assert "no drift" in overview.text or "badge-drift" in overview.text

        page = await browser.get("/ui/models/clf/monitoring")
        assert page.status_code == 200, page.text
        assert page.text.count('<svg class="time-chart"') == 2  # accuracy and F1; label coverage
        timeline = await platform.monitoring.performance_over_time(model="clf", window="24h")
        [bucket] = [b for b in timeline.buckets if b.predictions]
        assert (bucket.predictions, bucket.labelled) == (40, 30)
        accuracy, f1 = bucket.accuracy, bucket.f1_macro
        assert accuracy is not None and f1 is not None
        row = re.search(r"<tr><th scope=\"row\">[^<]+</th>.*?</tr>", page.text, re.S)
        assert row is not None
        cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
        assert cells == ["40", "30", "75.0 %", f"{accuracy:.4g}", f"{f1:.4g}"]
        assert f"accuracy {accuracy:.3g}" in html.unescape(page.text)  # a point's own label
        total = timeline.total
        assert "Last 24h: <strong>40</strong> predictions, <strong>30</strong> labelled (75.0 %)" in page.text
        assert f"accuracy <strong>{total.accuracy:.4g}</strong>" in page.text

        assert report["id"] in page.text  # the latest report, shown
        histograms = [f for f in report["features"] if f["histogram"] is not None]
        assert histograms and page.text.count('<svg class="drift-histogram"') == len(histograms)
        for feature in report["features"]:
            assert f'<th scope="row">{feature["feature"]}<br>' in page.text
        assert "Run drift check now" not in page.text and "/drift-check" not in page.text
        refused = await browser.post("/ui/models/clf/drift-check", data={"csrf": csrf_of(page)})
        assert refused.status_code == 403 and "may not write" in refused.text

        week = await browser.get("/ui/models/clf/monitoring", params={"window": "7d"})
        assert week.status_code == 200 and "buckets of 6h" in week.text
        v1 = await browser.get("/ui/models/clf/monitoring", params={"version": "1"})
        assert '<option value="1" selected>v1</option>' in v1.text and f"{accuracy:.4g}" in v1.text
        v2 = await browser.get("/ui/models/clf/monitoring", params={"version": "2"})
        assert "No prediction of clf was logged" in v2.text and '<svg class="time-chart"' not in v2.text
        assert (await browser.get("/ui/models/clf/monitoring", params={"version": "9"})).status_code == 404
        assert (await browser.get("/ui/models/clf/monitoring", params={"version": "x"})).status_code == 422
        shown = await browser.get("/ui/models/clf/monitoring", params={"report": report["id"]})
        assert "(shown)" in shown.text
        for params, status, text in (
            ({"window": "1y"}, 422, "window: &#39;1y&#39; is not one of 24h, 7d, 30d"),
            ({"report": "nope"}, 404, "nope"),
        ):
            bad = await browser.get("/ui/models/clf/monitoring", params=params)
            assert bad.status_code == status and text in bad.text and "<html" in bad.text, bad.text[-800:]
        assert (await browser.get("/ui/models/nope/monitoring")).status_code == 404
    model = await client.get("/api/ml/models/clf/drift-reports")
    assert model.json()["total"] == 1  # looking ran no check


async def test_a_model_without_predictions_says_so(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(ml=NO_SCHEDULE)
    await register(client, tmp_path)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get("/ui/models/clf/monitoring")
        assert page.status_code == 200
        assert "No prediction of clf was logged in the last 24h" in page.text
        assert "No drift report yet" in page.text and "<svg" not in page.text
        overview = await browser.get("/ui/monitoring")
        assert "No model has logged a prediction" in overview.text
        assert "1 other model logged no prediction" in overview.text


async def test_an_editor_runs_a_drift_check_and_a_version_without_reference_is_a_409_page(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml=NO_SCHEDULE)
    await with_feedback(client, platform, tmp_path)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get("/ui/models/clf/monitoring")
        assert "Run drift check now" in page.text
        forged = await browser.post("/ui/models/clf/drift-check", data={"window": "24h"})
        assert forged.status_code == 403 and "security token" in forged.text
        # The bare name serves v2, which kept no reference sample: the service's 409, on the page.
        refused = await browser.post("/ui/models/clf/drift-check", data={"csrf": csrf_of(page)})
        assert refused.status_code == 409 and 'role="alert"' in refused.text
        assert (
            "The drift check did not run: version 2 of &#39;clf&#39; has no reference sample" in refused.text
        )
        assert "Performance over time" in refused.text  # the page itself, not an error page
        assert (await client.get("/api/ml/models/clf/drift-reports")).json()["total"] == 0

        page = await browser.get("/ui/models/clf/monitoring", params={"version": "1"})  # v1 chosen
        assert '<input type="hidden" name="version" value="1">' in page.text
        data = {"csrf": csrf_of(page), "window": "7d", "version": "1"}
        done = await browser.post("/ui/models/clf/drift-check", data=data)
        assert done.status_code == 303, done.text
        reports = (await client.get("/api/ml/models/clf/drift-reports")).json()
        assert reports["total"] == 1 and reports["items"][0]["trigger"] == "manual"
        assert reports["items"][0]["version"] == 1
        location = done.headers["location"]
        report_id = reports["items"][0]["id"]
        assert location == f"/ui/models/clf/monitoring?window=7d&version=1&report={report_id}#drift-h"
        shown = await browser.get(location.split("#")[0])
        assert shown.status_code == 200 and reports["items"][0]["id"] in shown.text
        # v1 served none of the logged predictions (v2 did): the report says so, with no histograms.
        assert "0 logged rows sampled" in shown.text and "too little data" in shown.text


async def serve_v1(client: httpx.AsyncClient, platform: Platform) -> None:
    """v1 to production, and wait until this instance's registry snapshot has it (events apply behind)."""
    staged = await client.post("/api/ml/models/clf/versions/1/stage", json={"stage": "production"})
    assert staged.status_code == 200, staged.text
    async with asyncio.timeout(10):
        while platform.registry.resolve("clf").version != 1:
            await asyncio.sleep(0.02)


async def firing(client: httpx.AsyncClient, tmp_path: Path) -> dict[str, Any]:
    """ModelAccuracyDegraded firing for `clf` (accuracy 0 against the default threshold 0.8)."""
    ref = await register(client, tmp_path)
    answers = (await batch(client, "clf", ref.X[:20]))["predictions"]
    await logged(client, "clf", 20)
    await send(
        client, [{"prediction_id": a["prediction_id"], "actual": 1 - a["prediction"]} for a in answers]
    )
    assert (await client.post("/api/ml/monitoring/check")).json()["started"] == 1
    [alert] = (await client.get("/api/ml/alerts", params={"state": "firing"})).json()["items"]
    return dict(alert)


async def test_the_alerts_page_filters_and_an_editor_acknowledges(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml=NO_SCHEDULE)
    alert = await firing(client, tmp_path)
    acknowledge = f"/ui/alerts/{alert['id']}/acknowledge"
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get("/ui/alerts")
        assert page.status_code == 200 and 'aria-current="page">Alerts' in page.text
        assert "ModelAccuracyDegraded" in page.text and "badge-alert-firing" in page.text
        assert "clf: accuracy 0.000 is below 0.8" in page.text
        assert acknowledge not in page.text and "Add a rule" not in page.text  # a viewer acts on nothing
        refused = await browser.post(acknowledge, data={"csrf": csrf_of(page)})
        assert refused.status_code == 403 and "may not write" in refused.text
        model = await browser.get("/ui/models/clf")
        assert 'href="/ui/models/clf/monitoring">Monitoring' in model.text  # from the model's page
        monitoring = await browser.get("/ui/models/clf/monitoring")
        assert "1 open alert:" in monitoring.text and "clf: accuracy 0.000 is below 0.8" in monitoring.text
        overview = await browser.get("/ui/monitoring")
        assert "badge-severity-warning" in overview.text and "1 open" in overview.text
        for params, shown in (
            ({"state": "firing"}, True),
            ({"state": "resolved"}, False),
            ({"severity": "warning", "model": "clf"}, True),
            ({"severity": "critical"}, False),
            ({"model": "other"}, False),
        ):
            found = await browser.get("/ui/alerts", params=params)
            assert (
                found.status_code == 200
                and (alert["id"] in found.text or "badge-alert-firing" in found.text) is shown
            )
            assert ("No alert matches these filters" in found.text) is not shown
        assert 'hx-trigger="every 15s"' in page.text  # the rows refresh themselves
        rows = await browser.get("/ui/alerts", params={"state": "firing"}, headers={"HX-Request": "true"})
        assert rows.status_code == 200 and "<html" not in rows.text and "Rules" not in rows.text
        assert rows.text.startswith('<div id="alert-rows"')
        assert "ModelAccuracyDegraded" in rows.text and 'hx-get="/ui/alerts?state=firing"' in rows.text
        for params, field in (({"state": "sleeping"}, "state"), ({"severity": "loud"}, "severity")):
            bad = await browser.get("/ui/alerts", params=params)
            assert bad.status_code == 422 and f"{field}: " in bad.text and "<html" in bad.text
    assert (await client.get("/api/ml/alerts", params={"severity": "warning"})).json()["total"] == 1
    assert (await client.get("/api/ml/alerts", params={"severity": "critical"})).json()["total"] == 0
    assert (await client.get("/api/ml/alerts", params={"severity": "loud"})).status_code == 422

    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get("/ui/alerts", params={"state": "firing"})
        assert f'action="{acknowledge}"' in page.text
        for data in ({}, {"csrf": "forged"}):
            forged = await browser.post(acknowledge, data=data)
            assert forged.status_code == 403 and "security token" in forged.text
        assert (await platform.alerts.get(alert_id=alert["id"])).state == "firing"
        done = await browser.post(
            acknowledge, data={"csrf": csrf_of(page), "back": "/ui/alerts?state=firing"}
        )
        assert done.status_code == 303 and done.headers["location"] == "/ui/alerts?state=firing"
        acked = await platform.alerts.get(alert_id=alert["id"])
        assert acked.state == "acknowledged" and acked.acknowledged_by is not None
        assert "web console" in acked.acknowledged_by and "editor" in acked.acknowledged_by
        page = await browser.get("/ui/alerts")
        assert "badge-alert-acknowledged" in page.text and f'action="{acknowledge}"' not in page.text
        elsewhere = await browser.post(
            acknowledge, data={"csrf": csrf_of(page), "back": "https://evil.example/"}
        )
        assert elsewhere.headers["location"] == "/ui/alerts"
        assert (
            await browser.post("/ui/alerts/nope/acknowledge", data={"csrf": csrf_of(page)})
        ).status_code == 404


async def test_an_editor_adds_and_deletes_a_rule(make_app: AppFactory) -> None:
    client, _ = await make_app(ml=NO_SCHEDULE)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get("/ui/alerts")
        assert "ModelAccuracyDegraded" in page.text and "No alert has fired yet" in page.text
        refused = await browser.post("/ui/alert-rules", data={"csrf": csrf_of(page), "name": "x"})
        assert refused.status_code == 403

    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get("/ui/alerts")
        assert "Add a rule" in page.text and "set in configuration" in page.text
        form = {
            "csrf": csrf_of(page),
            "name": "SlowClf",
            "kind": "latency_p95_above",
            "threshold": "250",
            "window": "1h",
            "severity": "critical",
            "model": "clf",
        }
        for changes, status, text in (
            ({"threshold": "fast"}, 422, "threshold"),
            ({"window": "soon"}, 422, "window"),
            ({"kind": "magic"}, 422, "kind: not one of"),
            ({"name": "ModelAccuracyDegraded"}, 409, "defined in configuration"),
        ):
            bad = await browser.post("/ui/alert-rules", data={**form, **changes})
            assert bad.status_code == status and text in bad.text, (changes, bad.text[-2000:])
            assert 'role="alert"' in bad.text  # the form again, filled in:
            assert f'value="{changes.get("name", "SlowClf")}"' in bad.text
        added = await browser.post("/ui/alert-rules", data=form)
        assert added.status_code == 303
        rules = (await client.get("/api/ml/alert-rules")).json()
        [made] = [r for r in rules if r["name"] == "SlowClf"]
        assert (made["threshold"], made["severity"], made["model"], made["source"]) == (
            250.0,
            "critical",
            "clf",
            "api",
        )
        assert "web console" in made["created_by"]
        page = await browser.get("/ui/alerts")
        delete = f"/ui/alert-rules/{made['id']}/delete"
        assert f'action="{delete}"' in page.text
        assert (await browser.post(delete, data={})).status_code == 403
        assert (await browser.post(delete, data={"csrf": csrf_of(page)})).status_code == 303
        assert "SlowClf" not in {r["name"] for r in (await client.get("/api/ml/alert-rules")).json()}
        configured = await browser.post(
            "/ui/alert-rules/default:ModelAccuracyDegraded/delete", data={"csrf": csrf_of(page)}
        )
        assert configured.status_code == 409 and "configuration" in configured.text


async def test_a_regressor_shows_rmse_and_mae_over_the_week(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app(ml=NO_SCHEDULE)
    ref = await registered(client, tmp_path, "sklearn-regressor-skops", "reg")
    now = utcnow()
    for days_ago, errors in ((5, [1.0, -1.0]), (1, [2.0, 2.0, -4.0])):
        at = now - timedelta(days=days_ago)
        ids = await logged_at(platform, "reg", ref.X[: len(errors)], [10.0] * len(errors), at)
        items = [{"prediction_id": i, "actual": 10.0 + e} for i, e in zip(ids, errors, strict=True)]
        assert (await send(client, items)).json()["accepted"] == len(errors)
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get("/ui/models/reg/monitoring", params={"window": "7d"})
        assert page.status_code == 200
        assert "RMSE and MAE of labelled predictions" in page.text and "Accuracy" not in page.text
        assert '<th scope="col" class="num">RMSE</th>' in page.text
        assert (
            "· RMSE <strong>2.28</strong> · MAE <strong>2</strong>" in page.text
        )  # the week: sqrt(26/5), 10/5
        chart = page.text[page.text.index('<svg class="time-chart"') :]
        chart = chart[: chart.index("</svg>")]
        assert chart.count('<circle class="point series-0"') == 2  # RMSE, one point per labelled bucket
        assert "RMSE 2.83" in chart and "MAE 2.67" in chart  # sqrt(8) and 8/3, as the timeline gives them
        timeline = await platform.monitoring.performance_over_time(model="reg", window="7d")
        filled = [b for b in timeline.buckets if b.labelled]
        assert [b.rmse for b in filled] == pytest.approx([1.0, 8**0.5])
        for bucket in filled:
            assert f'<td class="num">{bucket.rmse:.4g}</td><td class="num">{bucket.mae:.4g}</td>' in page.text


async def test_the_pages_and_their_forms_need_a_session(make_app: AppFactory) -> None:
    client, _ = await make_app(ml=NO_SCHEDULE)
    for path in ("/ui/monitoring", "/ui/alerts?state=firing", "/ui/models/clf/monitoring"):
        response = await client.get(path)  # carries X-API-Key: pages want the session
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"].startswith(
            "/ui/login?next=" + path.split("?")[0].replace("/", "%2F")
        )
    for path in ("/ui/alerts/x/acknowledge", "/ui/alert-rules", "/ui/models/clf/drift-check"):
        forged = await client.post(path, data={"name": "x"})
        assert forged.status_code == 303 and forged.headers["location"].startswith("/ui/login"), path


async def test_alerts_are_paged_fifty_at_a_time_keeping_the_filters(make_app: AppFactory) -> None:
    client, platform = await make_app(ml=NO_SCHEDULE)
    for i in range(60):  # as a check run would raise them: 60 rules firing for one model
        await platform.alerts.store.fire(
            rule=f"rule-{i:02d}",
            kind="latency_p95_above",
            model="clf",
            severity="critical",
            value=300.0 + i,
            threshold=250.0,
            message=f"clf: p95 latency {300 + i} ms is above 250 ms over the last 1h",
            at=utcnow(),
        )
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        first = await browser.get("/ui/alerts", params={"severity": "critical", "model": "clf"})
        assert first.text.count('<tr>\n      <th scope="row">rule-') == 50
        assert "60 alerts matching, newest first, 1–50 shown" in first.text
        assert "rule-59" in first.text and "rule-09" not in first.text  # newest last_seen first
        following = "/ui/alerts?model=clf&amp;severity=critical&amp;offset=50"
        assert f'href="{following}">Next</a>' in first.text and ">Previous</a>" not in first.text
        second = await browser.get(following.replace("&amp;", "&"))
        assert second.text.count('<tr>\n      <th scope="row">rule-') == 10 and "51–60 shown" in second.text
        assert 'href="/ui/alerts?model=clf&amp;severity=critical">Previous</a>' in second.text
        assert 'hx-get="/ui/alerts?model=clf&amp;severity=critical&amp;offset=50"' in second.text
