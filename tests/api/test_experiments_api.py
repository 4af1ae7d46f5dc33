"""Experiments through the HTTP API: start, route predictions by a sticky key, results with the always-valid
test, promote and stop; shadow traffic; a second instance routes within a second; each bad input a 422."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplatform.clock import utcnow
from tests.api.conftest import AppFactory, two_instances
from tests.api.models import reference, upload
from tests.api.test_monitoring_api import batch, logged, single


async def two_versions(
    client: httpx.AsyncClient, tmp_path: Path, name: str = "churn", second: str = "xgboost-ubj"
) -> np.ndarray:
    ref = reference("xgboost-ubj", tmp_path)
    await upload(client, name, ref.path, ref.metadata)
    other = reference(second, tmp_path) if second != ref.label else ref
    await upload(client, name, other.path, other.metadata)
    return ref.X


def v(name: str, version: str, weight: float | None = None) -> dict[str, Any]:
    return {"name": name, "version": version} | ({} if weight is None else {"weight": weight})


def ab(model: str = "churn", **extra: Any) -> dict[str, Any]:
    body = {
        "name": "new trees",
        "model": model,
        "type": "ab",
        "variants": [
            v("a", "1", 50),
            v("b", "2", 50),
        ],
        "metric": "accuracy",
        "min_samples": 50,
    }
    return {**body, **extra}


async def test_an_ab_test_splits_by_request_id_logs_its_arms_and_promotes_the_winner(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    X = await two_versions(client, tmp_path)
    created = await client.post("/api/ml/experiments", json=ab())
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert experiment["state"] == "running" and [v["version"] for v in experiment["variants"]] == [
        (await client.get(f"/api/ml/models/churn/versions/{n}")).json()["id"] for n in (1, 2)
    ]

    answers = [await single(client, "churn", X[i % len(X)], request_id=f"user-{i}") for i in range(400)]
    assert all(a["experiment"] == experiment["id"] for a in answers)
    by_variant = {v: [a for a in answers if a["variant"] == v] for v in ("a", "b")}
    assert abs(len(by_variant["a"]) - 200) <= 3 * math.sqrt(400 * 0.25)  # binomial(400, 0.5), 3 sd
    assert {a["version"] for a in by_variant["b"]} == {experiment["variants"][1]["version"]}
    again = await single(client, "churn", X[7], request_id="user-7")
    assert again["variant"] == answers[7]["variant"]  # the same key always gets the same variant
    pinned = await single(client, "churn/1", X[0], request_id="user-0")
    assert pinned["experiment"] is None and pinned["version"].startswith("churn-v1-")  # asked for v1

    logs = await logged(client, "churn", 402)
    arms = {(e["experiment"], e["variant"]) for e in logs if e["experiment"]}
    assert arms == {(experiment["id"], "a"), (experiment["id"], "b")}

    # labels: variant a always right, variant b right 60 % of the time
    items = []
    for i, answer in enumerate(answers):
        right = answer["variant"] == "a" or i % 5 < 3
        actual = answer["prediction"] if right else 1 - int(answer["prediction"])
        items.append({"prediction_id": answer["prediction_id"], "actual": actual})
    assert (await client.post("/api/ml/feedback", json=items)).status_code == 200
    results = (await client.get(f"/api/ml/experiments/{experiment['id']}/results")).json()
    a, b = results["variants"]
    assert a["requests"] == len(by_variant["a"]) + (answers[7]["variant"] == "a")
    assert a["metrics"]["accuracy"]["value"] == 1.0 and a["labelled"] == len(by_variant["a"])
    expected_b = sum(1 for i, x in enumerate(answers) if x["variant"] == "b" and i % 5 < 3) / len(
        by_variant["b"]
    )
    assert b["metrics"]["accuracy"]["value"] == pytest.approx(expected_b)
    low, high = b["metrics"]["accuracy"]["low"], b["metrics"]["accuracy"]["high"]
    assert low < expected_b < high
    assert a["latency_ms"]["p95"]["value"] > 0 and sum(a["predictions"].values()) == a["requests"]
    comparison = results["comparisons"][0]
    assert comparison["significant"] and comparison["better"] is False and comparison["p_value"] < 0.05
    assert results["recommendation"] == "winner" and results["winner"] == "a", results

    promoted = await client.post(f"/api/ml/experiments/{experiment['id']}/promote", json={})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["state"] == "promoted" and promoted.json()["winner"] == "a"
    after = await single(client, "churn", X[0], request_id="user-1")
    assert after["experiment"] is None and after["version"] == experiment["variants"][0]["version"]
    model = (await client.get("/api/ml/models/churn/versions/1")).json()
    assert "production" in model["aliases"]
    history = (await client.get("/api/ml/models/churn/history")).json()["items"]
    actions = [h["action"] for h in history]
    assert "experiment_started" in actions and "experiment_promoted" in actions
    again_promote = await client.post(f"/api/ml/experiments/{experiment['id']}/promote", json={})
    assert again_promote.status_code == 409


async def test_batches_and_v2_infer_are_routed_and_stopping_ends_the_split(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    X = await two_versions(client, tmp_path)
    body = ab(variants=[v("a", "1", 0), v("b", "2", 100)])
    experiment = (await client.post("/api/ml/experiments", json=body)).json()
    answered = await batch(client, "churn", X[:20], request_id="batch-1")
    assert answered["variant"] == "b" and answered["experiment"] == experiment["id"]
    assert answered["version"].startswith("churn-v2-")
    tensor = {"name": "x", "shape": [2, X.shape[1]], "datatype": "FP64", "data": X[:2].ravel().tolist()}
    infer = await client.post("/v2/models/churn/infer", json={"inputs": [tensor]})
    assert infer.status_code == 200, infer.text
    assert infer.json()["model_version"] == "2"
    listed = (await client.get("/api/ml/experiments", params={"model": "churn", "state": "running"})).json()
    assert [e["id"] for e in listed["items"]] == [experiment["id"]]
    stopped = await client.post(f"/api/ml/experiments/{experiment['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    plain = await batch(client, "churn", X[:2])
    assert plain["experiment"] is None and plain["version"].startswith("churn-v2-")  # the newest version
    assert (await client.post(f"/api/ml/experiments/{experiment['id']}/stop")).status_code == 409


async def test_shadow_traffic_leaves_answers_alone_and_logs_the_shadow(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    X = await two_versions(client, tmp_path, second="lightgbm-text")
    before = [await single(client, "churn/1", X[i]) for i in range(30)]
    body = {
        "name": "shadow v2",
        "model": "churn",
        "type": "shadow",
        "variants": [v("live", "1"), v("shadow", "2", 100)],
    }
    experiment = (await client.post("/api/ml/experiments", json=body)).json()
    answers = [await single(client, "churn", X[i], request_id=f"s-{i}") for i in range(30)]
    assert [a["prediction"] for a in answers] == [b["prediction"] for b in before]
    assert {a["variant"] for a in answers} == {"live"}
    await platform.serving.shadows.join()
    logs = await logged(client, "churn", 90)
    shadowed = [e for e in logs if e["variant"] == "shadow"]
    assert len(shadowed) == 30 and all(e["version"].startswith("churn-v2-") for e in shadowed)
    results = (await client.get(f"/api/ml/experiments/{experiment['id']}/results")).json()
    assert [v["requests"] for v in results["variants"]] == [30, 30]
    live, shadow = results["variants"]
    twin = [await single(client, "churn/2", X[i]) for i in range(30)]  # what the shadow answers alone
    expected = sum(a["prediction"] == b["prediction"] for a, b in zip(answers, twin, strict=True)) / 30
    assert live["agreement"] is None and shadow["agreement"]["value"] == pytest.approx(expected)
    assert shadow["agreement"]["low"] <= expected <= shadow["agreement"]["high"]

    # labels sent for the answers given label the shadow's predictions too: its accuracy is the delta
    truth = [{"prediction_id": a["prediction_id"], "actual": a["prediction"]} for a in answers]
    assert (await client.post("/api/ml/feedback", json=truth)).status_code == 200
    results = (await client.get(f"/api/ml/experiments/{experiment['id']}/results")).json()
    live, shadow = results["variants"]
    assert live["metrics"]["accuracy"]["value"] == 1.0 and shadow["labelled"] == 30
    assert shadow["metrics"]["accuracy"]["value"] == pytest.approx(expected)
    assert results["comparisons"][0]["variant"] == "shadow"


async def bad(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/api/ml/experiments", json=body)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    return str(details[0]["field"] if isinstance(details, list) else details["field"])


async def test_each_bad_experiment_is_422_naming_the_field_and_one_runs_per_model(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    await two_versions(client, tmp_path)
    two = [v("a", "1", 60), v("b", "2", 30)]
    cases: list[tuple[dict[str, Any], str]] = [
        (ab(variants=two), "variants"),
        (
            ab(
                variants=[
                    v("a", "1", -5),
                    v("b", "2", 105),
                ]
            ),
            "variants.0.weight",
        ),
        (
            ab(
                variants=[
                    v("a", "1", 50),
                    v("a", "2", 50),
                ]
            ),
            "variants[1].name",
        ),
        (
            ab(
                variants=[
                    v("a", "1", 50),
                    v("b", "1", 50),
                ]
            ),
            "variants[1].version",
        ),
        (
            ab(
                variants=[
                    v("a", "9", 50),
                    v("b", "2", 50),
                ]
            ),
            "variants[0].version",
        ),
        (
            ab(
                variants=[
                    v("a", "@nope", 50),
                    v("b", "2", 50),
                ]
            ),
            "variants[0].version",
        ),
        (ab(model="ghost"), "model"),
        (ab(type="canary"), "variants[0].weight"),
        (ab(metric="vibes"), "metric"),
        (ab(sticky="cookie"), "sticky"),
        (
            ab(
                canary={"steps": [50, 25, 100]},
                type="canary",
                variants=[v("a", "1"), v("b", "2")],
            ),
            "canary.steps",
        ),
    ]
    for body, field in cases:
        assert await bad(client, body) == field, body
    assert (await client.get("/api/ml/experiments")).json()["total"] == 0

    assert (await client.post("/api/ml/experiments", json=ab())).status_code == 201
    second = await client.post("/api/ml/experiments", json=ab(name="another"))
    assert second.status_code == 409 and "already has a running experiment" in second.text


async def test_a_second_instance_routes_a_new_experiment_and_a_promotion_within_a_second(
    postgres_url: str, redis_url: str, make_app: AppFactory, tmp_path: Path
) -> None:
    (first, _), (second, _) = await two_instances(make_app, postgres_url, redis_url)
    X = await two_versions(first, tmp_path)
    async with asyncio.timeout(10):  # the second instance has heard of both versions
        while (
            await second.post("/api/ml/predict", json={"model": "churn/2", "features": X[0].tolist()})
        ).is_error:
            await asyncio.sleep(0.05)
    body = ab(variants=[v("a", "1", 0), v("b", "2", 100)])
    experiment = (await first.post("/api/ml/experiments", json=body)).json()

    async def served_by_second() -> dict[str, Any]:
        return await single(second, "churn", X[0], request_id="r")

    async with asyncio.timeout(1.0):
        while (await served_by_second())["experiment"] != experiment["id"]:
            await asyncio.sleep(0.02)
    await first.post(f"/api/ml/experiments/{experiment['id']}/promote", json={"variant": "a"})
    async with asyncio.timeout(1.0):
        while (answer := await served_by_second())["experiment"] is not None:
            await asyncio.sleep(0.02)
    assert answer["version"].startswith("churn-v1-")  # production now points at variant a's version


@pytest.mark.parametrize("sticky", ["header:X-User", "field:f1"])
async def test_a_header_or_a_feature_keeps_a_caller_on_one_variant(
    make_app: AppFactory, tmp_path: Path, sticky: str
) -> None:
    client, _ = await make_app()
    X = await two_versions(client, tmp_path)
    assert (await client.post("/api/ml/experiments", json=ab(sticky=sticky))).status_code == 201
    seen: dict[str, set[str]] = {}
    for i in range(200):
        user = f"user-{i % 20}"
        row = X[i % len(X)].copy()
        row[1] = i % 20  # the feature `f1` says who the caller is
        headers = {"X-User": user, "X-Request-ID": f"req-{i}"}
        features = dict(zip([f"f{j}" for j in range(len(row))], row.tolist(), strict=True))
        response = await client.post(
            "/api/ml/predict", json={"model": "churn", "features": features}, headers=headers
        )
        assert response.status_code == 200, response.text
        seen.setdefault(user, set()).add(response.json()["variant"])
    assert all(len(variants) == 1 for variants in seen.values()), seen
    assert set().union(*seen.values()) == {"a", "b"}  # twenty callers: both variants are used


def canary(**spec: Any) -> dict[str, Any]:
    return {
        "name": "v2 canary",
        "model": "churn",
        "type": "canary",
        "variants": [v("stable", "1"), v("next", "2")],
        "canary": {"steps": [50, 100], "step_min_samples": 20, "step_min_seconds": 0, **spec},
    }


async def test_a_canary_whose_version_fails_is_rolled_back_by_itself_with_an_alert_and_history(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml={"experiments": {"supervise-seconds": 0.1}})
    X = await two_versions(client, tmp_path, second="lightgbm-text")  # another file: not cached locally
    entry = platform.registry.resolve("churn/2")
    await platform.artifacts.delete(entry.artifact_key)  # version 2 can no longer be loaded: it fails
    for local in platform.serving.models.local_dir.glob(f"{entry.artifact_sha256}-*"):
        local.unlink()  # nor found in this instance's copy of the artifacts
    experiment = (await client.post("/api/ml/experiments", json=canary())).json()
    failures = 0
    async with asyncio.timeout(30):
        while (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()["state"] == "running":
            response = await client.post(
                "/api/ml/predict", json={"model": "churn", "features": X[failures % 50].tolist()}
            )
            failures += response.status_code >= 500
            await asyncio.sleep(0.005)
    ended = (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()
    assert ended["state"] == "rolled_back" and ended["ended_by"] == "experiment supervisor"
    assert "error_rate" in ended["reason"] and [v["weight"] for v in ended["variants"]] == [100, 0]
    assert failures >= 20
    async with asyncio.timeout(5):  # the end reaches this instance's routing table through its event
        while platform.registry.route("churn") is not None:
            await asyncio.sleep(0.01)
    after = [await single(client, "churn", X[i]) for i in range(20)]
    assert all(a["experiment"] is None and a["version"].startswith("churn-v1-") for a in after)
    async with asyncio.timeout(10):  # raised just after the experiment ended
        while not (alerts := (await client.get("/api/ml/alerts", params={"model": "churn"})).json()["items"]):
            await asyncio.sleep(0.05)
    assert [a["rule"] for a in alerts] == ["CanaryRolledBack"] and alerts[0]["severity"] == "critical"
    history = (await client.get("/api/ml/models/churn/history")).json()["items"]
    rolled = [h for h in history if h["action"] == "canary_rolled_back"]
    assert rolled and rolled[0]["actor"] == "experiment supervisor" and rolled[0]["details"]["reason"]


async def test_a_healthy_canary_steps_up_and_moves_production_to_its_version(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    X = await two_versions(client, tmp_path)
    await client.post("/api/ml/models/churn/versions/1/stage", json={"stage": "production"})
    experiment = (await client.post("/api/ml/experiments", json=canary())).json()
    assert [v["weight"] for v in experiment["variants"]] == [50, 50]
    assert await platform.experiments.supervise() == []  # no samples yet: it waits

    async def traffic(n: int) -> None:
        for i in range(n):
            await single(client, "churn", X[i % 50], request_id=f"c-{i}-{n}")

    await traffic(80)
    async with asyncio.timeout(15):  # the log is written behind the answers
        while not (done := await platform.experiments.supervise()):
            await asyncio.sleep(0.1)
    assert "step" in done[0]
    stepped = (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()
    assert stepped["step"] == 1 and [v["weight"] for v in stepped["variants"]] == [0, 100]
    await traffic(40)
    async with asyncio.timeout(15):
        while not (done := await platform.experiments.supervise()):
            await asyncio.sleep(0.1)
    assert "promote" in done[0]
    finished = (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()
    assert finished["state"] == "promoted" and finished["winner"] == "next"
    assert "production" in (await client.get("/api/ml/models/churn/versions/2")).json()["aliases"]
    actions = [h["action"] for h in (await client.get("/api/ml/models/churn/history")).json()["items"]]
    assert {"experiment_started", "canary_step", "experiment_promoted"} <= set(actions)


async def test_an_alert_on_the_model_rolls_the_canary_back_and_max_duration_stops_an_ab_test(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app()
    await two_versions(client, tmp_path)
    experiment = (await client.post("/api/ml/experiments", json=canary())).json()
    await platform.alerts.store.fire(
        rule="ModelAccuracyDegraded",
        kind="accuracy_below",
        model="churn",
        severity="warning",
        value=0.5,
        threshold=0.8,
        message="accuracy 0.5 below 0.8",
        at=utcnow(),
    )
    done = await platform.experiments.supervise()
    assert done and "alert ModelAccuracyDegraded" in done[0]
    assert (await client.get(f"/api/ml/experiments/{experiment['id']}")).json()["state"] == "rolled_back"

    timed = (await client.post("/api/ml/experiments", json=ab(max_duration_seconds=60))).json()
    assert await platform.experiments.supervise() == []
    later = utcnow() + timedelta(seconds=61)
    assert "max duration" in (await platform.experiments.supervise(now=later))[0]
    ended = (await client.get(f"/api/ml/experiments/{timed['id']}")).json()
    assert ended["state"] == "stopped" and "max duration" in ended["reason"]


async def test_a_stuck_shadow_neither_holds_answers_nor_queues_without_bound(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml={"predictions": {"shadow-queue-size": 5}})
    X = await two_versions(client, tmp_path)
    body = {
        "name": "stuck",
        "model": "churn",
        "type": "shadow",
        "variants": [v("live", "1"), v("shadow", "2", 100)],
    }
    experiment = (await client.post("/api/ml/experiments", json=body)).json()
    gate = asyncio.Event()
    run = platform.serving.shadows.run

    async def stuck(job: Any) -> None:  # the shadow's worker waits until the gate opens
        await gate.wait()
        await run(job)

    platform.serving.shadows.run = stuck
    answers = [await single(client, "churn", X[i]) for i in range(20)]  # every answer while it is stuck
    assert {a["variant"] for a in answers} == {"live"}
    text = (await client.get("/actuator/prometheus")).text
    dropped = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ml_experiment_shadow_dropped_total{") and experiment["id"] in line
    )
    assert dropped >= 20 - 5 - 1  # five wait in the queue, one in the stuck worker
    gate.set()
    await platform.serving.shadows.join()
    logs = await logged(client, "churn", 20 + 20 - int(dropped))
    assert len([e for e in logs if e["variant"] == "shadow"]) == 20 - dropped


async def test_stopping_a_canary_keeps_its_baseline_serving(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app()
    X = await two_versions(client, tmp_path)  # no production alias: the bare name would mean the newest, v2
    experiment = (await client.post("/api/ml/experiments", json=canary())).json()
    stopped = await client.post(f"/api/ml/experiments/{experiment['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    async with asyncio.timeout(5):
        while platform.registry.route("churn") is not None:
            await asyncio.sleep(0.01)
    answer = await single(client, "churn", X[0])
    assert answer["experiment"] is None and answer["version"].startswith("churn-v1-")
    history = (await client.get("/api/ml/models/churn/history")).json()["items"]
    assert [h["action"] for h in history][:2] == ["experiment_stopped", "alias_set"]


async def test_failed_requests_and_shadow_agreement_add_up_over_every_instance(
    postgres_url: str, redis_url: str, make_app: AppFactory, tmp_path: Path
) -> None:
    """What the predict path counts in memory (failures, a shadow's agreement) is saved by each instance's
    supervisor, so results read on either instance add up both."""
    faster = {"ml": {"experiments": {"supervise-seconds": 0.2}}}
    (first, one), (second, two) = await two_instances(make_app, postgres_url, redis_url, **faster)
    X = await two_versions(first, tmp_path, second="lightgbm-text")
    # another file than churn's version 2: local artifact copies are shared by content
    await two_versions(first, tmp_path, name="fraud", second="sklearn-forest-skops")
    broken = one.registry.resolve("churn/2")
    await one.artifacts.delete(broken.artifact_key)  # churn's version 2 cannot be loaded on either instance
    for platform in (one, two):
        for local in platform.serving.models.local_dir.glob(f"{broken.artifact_sha256}-*"):
            local.unlink()
    split = await first.post("/api/ml/experiments", json=ab(variants=[v("a", "1", 0), v("b", "2", 100)]))
    shadow_body = {
        "name": "shadow v2",
        "model": "fraud",
        "type": "shadow",
        "variants": [v("live", "1"), v("shadow", "2", 100)],
    }
    shadow = await first.post("/api/ml/experiments", json=shadow_body)
    assert split.status_code == shadow.status_code == 201
    for platform in (one, two):  # both instances route both experiments
        async with asyncio.timeout(5):
            while platform.registry.route("churn") is None or platform.registry.route("fraud") is None:
                await asyncio.sleep(0.02)

    failed, answers = 0, []
    for i in range(20):
        client = first if i % 2 else second
        body = {"model": "churn", "features": X[i].tolist()}
        failed += (await client.post("/api/ml/predict", json=body)).status_code >= 500
        answers.append(await single(client, "fraud", X[i], request_id=f"s-{i}"))
    assert failed == 20
    for platform in (one, two):
        await platform.serving.shadows.join()
    twin = [await single(first, "fraud/2", X[i]) for i in range(20)]  # what the shadow answers alone
    agreed = sum(a["prediction"] == b["prediction"] for a, b in zip(answers, twin, strict=True))

    split_results = f"/api/ml/experiments/{split.json()['id']}/results"
    shadow_results = f"/api/ml/experiments/{shadow.json()['id']}/results"
    for client in (first, second):  # each instance's supervisor saved its own counts within a few rounds
        async with asyncio.timeout(10):
            while (await client.get(split_results)).json()["variants"][1]["errors"] < 20:
                await asyncio.sleep(0.05)
            while (await client.get(shadow_results)).json()["variants"][1]["compared"] < 20:
                await asyncio.sleep(0.05)
        errors = [arm["errors"] for arm in (await client.get(split_results)).json()["variants"]]
        assert errors == [0, 20]  # ten failed on each instance, none counted twice
        found = (await client.get(shadow_results)).json()["variants"][1]
        assert found["compared"] == 20 and found["agreement"]["value"] == pytest.approx(agreed / 20)


async def test_labels_for_a_batch_answer_label_the_shadow_rows_it_was_mirrored_to(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(ml={"predictions": {"batch-size": 7}})  # 30 rows: five log blocks
    X = await two_versions(client, tmp_path, second="lightgbm-text")
    body = {
        "name": "shadow v2",
        "model": "churn",
        "type": "shadow",
        "variants": [v("live", "1"), v("shadow", "2", 100)],
    }
    experiment = (await client.post("/api/ml/experiments", json=body)).json()
    answers = (await batch(client, "churn", X[:30], request_id="one-batch"))["predictions"]
    await platform.serving.shadows.join()
    twin = (await batch(client, "churn/2", X[:30]))["predictions"]  # what the shadow answers alone
    agreed = [a["prediction"] == b["prediction"] for a, b in zip(answers, twin, strict=True)]
    assert 0 < sum(agreed) < 30  # the two versions differ on some rows: the pairing is tested
    await logged(client, "churn", 90)

    truth = [{"prediction_id": a["prediction_id"], "actual": a["prediction"]} for a in answers]
    assert (await client.post("/api/ml/feedback", json=truth)).status_code == 200
    results = (await client.get(f"/api/ml/experiments/{experiment['id']}/results")).json()
    live, shadow = results["variants"]
    assert live["labelled"] == shadow["labelled"] == 30
    assert live["metrics"]["accuracy"]["value"] == 1.0
    assert shadow["metrics"]["accuracy"]["value"] == pytest.approx(sum(agreed) / 30)  # row by row
    assert shadow["compared"] == 30 and shadow["agreement"]["value"] == pytest.approx(sum(agreed) / 30)
