"""The console's experiment pages through `create_app`: the list and its filter, an experiment's numbers as
the experiments service gives them, the interval plots, Promote and Stop (role, CSRF, a 409 on the page)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlplatform.experiments.schemas import Estimate
from tests.api.conftest import AppFactory
from tests.api.test_experiments_api import ab, two_versions, v
from tests.api.test_monitoring_api import logged, single
from tests.api.test_ui import browser_of, create_key, csrf_of, sign_in


def shown(e: Estimate | None) -> str:
    """An estimate as the page prints it (the template's `%.4g`)."""
    assert e is not None and e.value is not None
    text = f'<span class="estimate">{e.value:.4g}</span>'
    if e.low is not None and e.high is not None:
        text += f' <span class="interval">[{e.low:.4g}, {e.high:.4g}]</span>'
    return text


async def experiment_with_a_winner(
    client: httpx.AsyncClient, tmp_path: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """An A/B test on churn with 200 labelled requests: variant a always right, b right 60 % of the time."""
    X = await two_versions(client, tmp_path)
    created = await client.post("/api/ml/experiments", json=ab())
    assert created.status_code == 201, created.text
    experiment = dict(created.json())
    answers = [await single(client, "churn", X[i % len(X)], request_id=f"user-{i}") for i in range(200)]
    await logged(client, "churn", 200)
    items = []
    for i, answer in enumerate(answers):
        right = answer["variant"] == "a" or i % 5 < 3
        actual = answer["prediction"] if right else 1 - int(answer["prediction"])
        items.append({"prediction_id": answer["prediction_id"], "actual": actual})
    assert (await client.post("/api/ml/feedback", json=items)).status_code == 200
    return experiment, X


async def test_the_pages_show_the_services_results_and_a_viewer_may_not_act(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    experiment, _ = await experiment_with_a_winner(client, tmp_path)
    results = await platform.experiments.results(experiment["id"])
    assert results.recommendation == "winner" and results.winner == "a"
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        listed = await browser.get("/ui/experiments")
        assert listed.status_code == 200 and 'aria-current="page">Experiments' in listed.text
        assert f'href="/ui/experiments/{experiment["id"]}">new trees</a>' in listed.text
        assert "A/B test" in listed.text and "badge-exp-running" in listed.text
        assert "a <span" in listed.text and "(50 %)" in listed.text
        assert "/ui/api-keys" not in listed.text  # the API keys page is an admin's
        stopped = await browser.get("/ui/experiments", params={"state": "stopped"})
        assert "No experiment is stopped." in stopped.text and experiment["id"] not in stopped.text
        bad = await browser.get("/ui/experiments", params={"state": "paused"})
        assert bad.status_code == 422 and "state" in bad.text
        on_churn = await browser.get("/ui/experiments", params={"model": "churn", "state": "running"})
        assert experiment["id"] in on_churn.text and "1 experiment on churn running" in on_churn.text
        elsewhere = await browser.get("/ui/experiments", params={"model": "fraud"})
        assert "No experiment on fraud." in elsewhere.text and experiment["id"] not in elsewhere.text
        bad_name = await browser.get("/ui/experiments", params={"model": "no way"})
        assert bad_name.status_code == 422 and "model name" in bad_name.text

        page = await browser.get(f"/ui/experiments/{experiment['id']}")
        assert page.status_code == 200
        text = page.text
        for variant in results.variants:
            row = text[text.index(f'<th scope="row">{variant.name}') :]
            row = row[: row.index("</tr>")]
            cells = re.findall(r'<td class="num">(\d+)', row)
            assert cells[1:3] == [str(variant.requests), str(variant.errors)], (variant.name, cells)
            assert str(variant.labelled) in cells
            assert shown(variant.error_rate) in row
            assert f"accuracy {shown(variant.metrics['accuracy'])}" in row
            for p in ("p50", "p95", "p99"):
                assert shown(variant.latency_ms[p]) in row, p
            href = f'href="/ui/models/churn/versions/{1 if variant.name == "a" else 2}">{variant.version}'
            assert href in row
        answers = text[text.index('id="answers-h"') :]
        for variant in results.variants:
            row = answers[answers.index(f'<th scope="row">{variant.name}</th>') :]
            row = row[: row.index("</tr>")]
            for value, count in variant.predictions.items():
                assert f"<code>{value}</code>: {count}" in row, (variant.name, value)
        comparison = results.comparisons[0]
        assert comparison.difference is not None and comparison.p_value is not None
        assert f'<span class="estimate">{comparison.difference:.4g}</span>' in text
        assert f"[{comparison.interval.low:.4g}, {comparison.interval.high:.4g}]" in text
        assert f"{comparison.p_value:.4g}" in text and "b is <strong>worse</strong>" in text
        assert "Promote a: the best variant on accuracy (higher is better)." in text
        assert results.reason in text
        assert text.count('<svg class="forest"') >= 6  # error rate, accuracy, 3 latencies, the difference
        assert '<line class="zero"' in text  # the difference's plot marks no difference
        assert 'hx-trigger="every 10s"' in text  # running: the results refresh themselves
        assert "/promote" not in text and "/stop" not in text  # a viewer is offered neither
        for action in ("promote", "stop"):
            refused = await browser.post(
                f"/ui/experiments/{experiment['id']}/{action}", data={"csrf": csrf_of(page), "variant": "a"}
            )
            assert refused.status_code == 403 and "may not write" in refused.text
        partial = await browser.get(f"/ui/experiments/{experiment['id']}", headers={"HX-Request": "true"})
        assert "<html" not in partial.text and 'id="experiment-results"' in partial.text
        missing = await browser.get("/ui/experiments/nope")
        assert missing.status_code == 404 and "<html" in missing.text
    assert (await platform.experiments.get(experiment["id"])).state == "running"


async def test_an_editor_promotes_the_recommended_winner_and_a_second_promotion_is_409(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    experiment, _ = await experiment_with_a_winner(client, tmp_path)
    path = f"/ui/experiments/{experiment['id']}"
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get(path)
        assert f'action="{path}/promote"' in page.text and f'action="{path}/stop"' in page.text
        assert '<option value="a" selected>a (recommended)</option>' in page.text
        for data in ({"variant": "a"}, {"variant": "a", "csrf": "forged"}):
            forged = await browser.post(f"{path}/promote", data=data)
            assert forged.status_code == 403 and "security token" in forged.text
        assert (await platform.experiments.get(experiment["id"])).state == "running"
        token = csrf_of(page)
        unknown = await browser.post(f"{path}/promote", data={"csrf": token, "variant": "zz"})
        assert unknown.status_code == 422 and "no variant &#39;zz&#39;" in unknown.text
        assert 'role="alert"' in unknown.text and "new trees" in unknown.text  # the page, with the message

        promoted = await browser.post(f"{path}/promote", data={"csrf": token, "variant": "a"})
        assert promoted.status_code == 303 and promoted.headers["location"] == path
        after = await browser.get(path)
        assert "badge-exp-promoted" in after.text and "<strong>a</strong> promoted" in after.text
        assert "a was the best variant on accuracy" in after.text and "Finding" in after.text
        assert 'hx-trigger="every 10s"' not in after.text and f'action="{path}/promote"' not in after.text

        again = await browser.post(f"{path}/promote", data={"csrf": token, "variant": "b"})
        assert again.status_code == 409
        assert 'role="alert"' in again.text and "is already promoted" in again.text
        stop_again = await browser.post(f"{path}/stop", data={"csrf": token, "reason": "late"})
        assert stop_again.status_code == 409 and "is already promoted" in stop_again.text
    model = await platform.registry.get_model("churn")
    assert model.aliases["production"] == 1
    history = await platform.registry.history("churn", limit=10, offset=0)
    promotion = next(h for h in history.items if h.action == "experiment_promoted")
    assert "web console" in promotion.actor and "editor" in promotion.actor


async def test_an_editor_stops_an_experiment_with_a_reason(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app()
    await two_versions(client, tmp_path)
    experiment = (await client.post("/api/ml/experiments", json=ab(name="second try"))).json()
    path = f"/ui/experiments/{experiment['id']}"
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "editor"))["key"])
        page = await browser.get(path)
        assert "Keep running: no decision yet." in page.text and "0 of at least 50" in page.text
        assert "selected>" not in page.text.split('id="variant"')[1].split("</select>")[0]  # no winner
        for data in ({"reason": "x"}, {"reason": "x", "csrf": "forged"}):
            forged = await browser.post(f"{path}/stop", data=data)
            assert forged.status_code == 403 and "security token" in forged.text
        assert (await platform.experiments.get(experiment["id"])).state == "running"
        stopped = await browser.post(f"{path}/stop", data={"csrf": csrf_of(page), "reason": "wrong split"})
        assert stopped.status_code == 303
        after = await browser.get(path)
        assert "badge-exp-stopped" in after.text and "wrong split" in after.text
    ended = await platform.experiments.get(experiment["id"])
    assert (
        ended.state == "stopped" and ended.reason == "wrong split" and "web console" in (ended.ended_by or "")
    )


async def test_a_canary_shows_its_steps_and_a_shadow_its_agreement(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    X = await two_versions(client, tmp_path, second="lightgbm-text")
    body = {
        "name": "v2 canary",
        "model": "churn",
        "type": "canary",
        "variants": [v("stable", "1"), v("next", "2")],
        "canary": {"steps": [10, 50, 100], "step_min_samples": 20, "step_min_seconds": 60},
    }
    canary = (await client.post("/api/ml/experiments", json=body)).json()
    async with browser_of(client) as browser:
        await sign_in(browser, (await create_key(client, "viewer"))["key"])
        page = await browser.get(f"/ui/experiments/{canary['id']}")
        assert page.status_code == 200 and "Canary steps" in page.text
        assert 'class="step-current" aria-current="step">10 %' in page.text and ">100 %</li>" in page.text
        assert "at least 20 requests on the canary and 60 s" in page.text and "10 % worse" in page.text
        await stop_through_the_api(client, canary["id"])

        shadow = {
            "name": "shadow v2",
            "model": "churn",
            "type": "shadow",
            "variants": [v("live", "1"), v("shadow", "2", 100)],
        }
        experiment = (await client.post("/api/ml/experiments", json=shadow)).json()
        for i in range(30):
            await single(client, "churn", X[i], request_id=f"s-{i}")
        await platform.serving.shadows.join()
        await logged(client, "churn", 60)
        results = await platform.experiments.results(experiment["id"])
        page = await browser.get(f"/ui/experiments/{experiment['id']}")
        shadow_row = results.variants[1]
        assert shadow_row.compared == 30 and shadow_row.agreement is not None
        assert "Shadow agreement" in page.text
        assert f'{shown(shadow_row.agreement)} <span class="muted">of 30 compared' in page.text
        assert "the shadow&#39;s answers equal to the answer given" in page.text


async def stop_through_the_api(client: httpx.AsyncClient, experiment_id: str) -> None:
    assert (await client.post(f"/api/ml/experiments/{experiment_id}/stop")).status_code == 200
