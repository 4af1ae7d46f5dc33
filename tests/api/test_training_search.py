"""Hyperparameter search through the HTTP API on a real Dask cluster: parallel trials, the best registered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from itertools import combinations
from typing import Any

import httpx
import numpy as np
import pytest

from mlplatform.platform import Platform
from tests.api.conftest import AppFactory, local_cluster

TERMINAL = {"succeeded", "failed", "cancelled"}
ROWS = 300


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One LocalCluster (2 worker processes, 1 thread each) for the module's apps, as `jobs.scheduler`."""
    with local_cluster() as cluster:
        yield str(cluster.scheduler_address)


def table(rows: int = ROWS) -> tuple[bytes, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A CSV, its feature matrix as the worker reads it (rounded as written) and its labels."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, 3)).round(6)
    label = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.8, size=rows) > 0, "yes", "no")
    lines = ["x1,x2,x3,label"]
    lines += [f"{a:.6f},{b:.6f},{c:.6f},{y}" for (a, b, c), y in zip(x, label, strict=True)]
    return ("\n".join(lines) + "\n").encode(), x, label


async def app_with_dataset(
    make_app: AppFactory, scheduler: str, rows: int = ROWS
) -> tuple[Any, Platform, str]:
    client, platform = await make_app(jobs={"scheduler": scheduler})
    content, _, _ = table(rows)
    response = await client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "d"})
    assert response.status_code == 201, response.text
    return client, platform, str(response.json()["id"])


def body(dataset: str, search: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": "churn",
        "dataset": dataset,
        "target": "label",
        "algorithm": "xgboost",
        "hyperparameters": {"n_estimators": 40},
        "search": search,
        **extra,
    }


async def wait_for(client: httpx.AsyncClient, job_id: str, states: set[str], timeout: float = 120) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            job = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()
            if job["state"] in states:
                return job
            await asyncio.sleep(0.1)


async def trials_of(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/ml/training-jobs/{job_id}/trials")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == len(page["items"])
    return list(page["items"])


async def test_a_grid_search_records_every_trial_and_registers_the_best_by_the_metric(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    grid = [0.001, 0.01, 0.1, 1.0]
    search = {"strategy": "grid", "space": {"C": {"choice": grid}}, "metric": "log_loss"}
    request = body(dataset, search, algorithm="logistic_regression", hyperparameters={"max_iter": 500})
    submitted = await client.post("/api/ml/training-jobs", json=request)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["search"]["trials"] == 4 and submitted.json()["search"]["metric"] == "log_loss"
    job = await wait_for(client, submitted.json()["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    progress = job["progress"]
    assert (progress["unit"], progress["current"], progress["total"], progress["fraction"]) == (
        "trial",
        4,
        4,
        1.0,
    )
    assert progress["metric_name"] == "log_loss"

    # Each trial's metric, computed here with scikit-learn on the job's split.
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import train_test_split

    _, x, label = table()
    y = (label == "yes").astype(int)
    train, val = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    train, val = np.sort(train), np.sort(val)  # the job keeps the dataset's row order
    X_train, X_val = np.asarray(x)[train], np.asarray(x)[val]
    y_train, y_val = np.asarray(y)[train], np.asarray(y)[val]
    expected = {}
    for c in grid:
        model = LogisticRegression(C=c, max_iter=500).fit(X_train, y_train)
        expected[c] = (
            log_loss(y_val, model.predict_proba(X_val)),
            accuracy_score(y_val, model.predict(X_val)),
        )

    trials = await trials_of(client, job["id"])
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert [t["params"] for t in trials] == [{"C": c} for c in grid]
    for trial in trials:
        loss, accuracy = expected[trial["params"]["C"]]
        assert trial["state"] == "succeeded" and trial["error"] is None
        assert trial["value"] == pytest.approx(loss, rel=1e-4)
        assert trial["metrics"]["log_loss"] == trial["value"]
        assert trial["metrics"]["accuracy"] == pytest.approx(accuracy)
        assert trial["worker"].startswith("tcp://127.0.0.1") and trial["duration_seconds"] > 0
    best_c = min(grid, key=lambda c: expected[c][0])
    assert [t["params"]["C"] for t in trials if t["best"]] == [best_c]
    best = next(t for t in trials if t["best"])
    assert job["metrics"] == best["metrics"]

    versions = (await client.get("/api/ml/models/churn/versions")).json()
    items = versions["items"] if isinstance(versions, dict) else versions
    assert len(items) == 1
    version = (await client.get("/api/ml/models/churn/versions/1")).json()
    assert version["id"] == job["version_id"] and version["metrics"] == best["metrics"]
    assert version["training_job_id"] == job["id"]
    assert f"best of 4 trials (trial {best['number']}): max_iter=500, C={best_c!r}" in version["description"]
    # The registered model is the best trial's: it predicts as that C does.
    row = {"x1": 0.3, "x2": -0.2, "x3": 1.0}
    predicted = await client.post("/api/ml/predict", json={"model": "churn", "features": row})
    assert predicted.status_code == 200, predicted.text
    local = LogisticRegression(C=best_c, max_iter=500).fit(X_train, y_train)
    probability = local.predict_proba(np.array([[0.3, -0.2, 1.0]]))[0, 1]
    assert predicted.json()["probabilities"]["yes"] == pytest.approx(probability, rel=1e-4)


@pytest.mark.parametrize("strategy", ["random", "tpe"])
async def test_random_and_tpe_searches_run_their_trials_in_parallel_on_both_workers(
    make_app: AppFactory, scheduler: str, strategy: str
) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler, rows=2000)
    space = {
        "max_depth": {"int": [2, 6]},
        "learning_rate": {"float": [0.02, 0.5], "log": True},
        "subsample": {"float": [0.5, 1.0]},
    }
    search = {"strategy": strategy, "space": space, "trials": 6, "seed": 3}
    request = body(dataset, search, hyperparameters={"n_estimators": 300})
    submitted = (await client.post("/api/ml/training-jobs", json=request)).json()
    assert submitted["search"]["metric"] == "f1" and submitted["search"]["parallel"] is None
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    trials = await trials_of(client, job["id"])
    assert [t["number"] for t in trials] == list(range(6))
    assert all(t["state"] == "succeeded" for t in trials), trials
    for trial in trials:
        params = trial["params"]
        assert set(params) == set(space) and isinstance(params["max_depth"], int)
        assert 2 <= params["max_depth"] <= 6 and 0.02 <= params["learning_rate"] <= 0.5
        assert 0.5 <= params["subsample"] <= 1.0
    assert len({t["params"]["learning_rate"] for t in trials}) == 6
    best = [t for t in trials if t["best"]]
    assert len(best) == 1 and best[0]["value"] == max(t["value"] for t in trials)
    assert job["metrics"] == best[0]["metrics"] and job["metrics"]["f1"] == best[0]["value"]
    # Two workers with one thread each: trials ran side by side, the coordinator holding no thread.
    spans = [
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"])) for t in trials
    ]
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in combinations(spans, 2))
    assert len({t["worker"] for t in trials}) == 2


async def test_the_same_seed_draws_the_same_random_trials(make_app: AppFactory, scheduler: str) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler)
    search = {"strategy": "random", "space": {"max_depth": {"int": [1, 8]}, "gamma": {"float": [0, 2]}}}
    params = []
    for _ in range(2):
        request = body(dataset, {**search, "trials": 3, "seed": 11}, hyperparameters={"n_estimators": 5})
        job = await wait_for(
            client, (await client.post("/api/ml/training-jobs", json=request)).json()["id"], TERMINAL
        )
        assert job["state"] == "succeeded", job
        params.append([t["params"] for t in await trials_of(client, job["id"])])
    assert params[0] == params[1] and len({p["gamma"] for p in params[0]}) == 3


async def test_cancelling_a_search_stops_its_trials_and_registers_nothing(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler, rows=2000)
    space = {"max_depth": {"int": [4, 8]}, "subsample": {"float": [0.5, 1.0]}}
    search = {"strategy": "random", "space": space, "trials": 10, "parallel": 2}
    request = body(dataset, search, hyperparameters={"n_estimators": 200_000})
    submitted = (await client.post("/api/ml/training-jobs", json=request)).json()
    async with asyncio.timeout(60):
        while True:
            job = (await client.get(f"/api/ml/training-jobs/{submitted['id']}")).json()
            if job["state"] == "running" and job["progress"]["fraction"] > 0:
                break
            await asyncio.sleep(0.1)
    assert job["progress"]["unit"] == "trial" and job["progress"]["total"] == 10
    cancelled = await client.post(f"/api/ml/training-jobs/{submitted['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
    job = await wait_for(client, submitted["id"], TERMINAL, timeout=30)
    assert job["state"] == "cancelled" and job["version_id"] is None and job["metrics"] == {}
    trials = await trials_of(client, job["id"])
    assert 1 <= len(trials) <= 2 and all(t["state"] == "cancelled" and not t["best"] for t in trials), trials
    assert (await client.get("/api/ml/models/churn")).status_code == 404
    assert await platform.artifacts.list("models/") == []


async def test_a_search_whose_every_trial_fails_fails_with_the_reason(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    search = {"strategy": "grid", "space": {"max_depth": {"int": [-3, -2]}}}
    submitted = (await client.post("/api/ml/training-jobs", json=body(dataset, search))).json()
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "failed" and "all 2 trials failed" in job["error"], job
    trials = await trials_of(client, job["id"])
    assert [t["state"] for t in trials] == ["failed", "failed"] and all(
        "max_depth" in t["error"] for t in trials
    )
    assert (await client.get("/api/ml/models/churn")).status_code == 404
    assert await platform.artifacts.list("models/") == []


async def bad(client: httpx.AsyncClient, request: dict[str, Any]) -> str:
    response = await client.post("/api/ml/training-jobs", json=request)
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["details"][0]["field"])


async def test_each_bad_search_is_422_naming_the_field_and_creates_no_job(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    depth = {"max_depth": {"int": [2, 8]}}
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"space": {"max_depht": {"int": [2, 8]}}}, {}, "search.space.max_depht"),
        ({"space": {"callbacks": {"choice": [1]}}}, {}, "search.space.callbacks"),
        ({"space": {"max_depth": {"int": [8, 2]}}}, {}, "search.space.max_depth"),
        ({"space": {"max_depth": {"int": [2, 8], "choice": [3]}}}, {}, "search.space.max_depth"),
        ({"space": {"max_depth": {"int": [2.5, 8]}}}, {}, "search.space.max_depth.int.0"),
        ({"space": {"learning_rate": {"float": [0, 1], "log": True}}}, {}, "search.space.learning_rate"),
        ({"space": {"booster": {"choice": ["gbtree", "gbtree"]}}}, {}, "search.space.booster"),
        ({"space": {}}, {}, "search.space"),
        ({"space": depth}, {"hyperparameters": {"max_depth": 3}}, "search.space.max_depth"),
        (
            {"space": {"learning_rate": {"float": [0.1, 0.3]}}, "strategy": "grid"},
            {},
            "search.space.learning_rate",
        ),
        (
            {"space": {"max_depth": {"int": [1, 100]}, "gamma": {"int": [0, 9]}}, "strategy": "grid"},
            {},
            "search.space",
        ),
        ({"space": depth, "strategy": "grid", "trials": 3}, {}, "search.trials"),
        ({"space": depth, "strategy": "bayes"}, {}, "search.strategy"),
        ({"space": depth, "trials": 0}, {}, "search.trials"),
        ({"space": depth, "trials": 501}, {}, "search.trials"),
        ({"space": depth, "metric": "rmse"}, {}, "search.metric"),
        (
            {"space": {"alpha": {"float": [0.1, 10]}}, "metric": "roc_auc"},
            {"algorithm": "ridge"},
            "search.metric",
        ),
        ({"space": depth, "trials": 3, "parallel": 4}, {}, "search.parallel"),
        ({"space": depth, "trials": 8}, {}, "search.trials"),
        ({"space": depth, "seeds": 1}, {}, "search.seeds"),
        ({"space": {"max_depth": {"int": [0, 3]}}}, {"algorithm": "random_forest"}, "search.space.max_depth"),
        (
            {"space": {"criterion": {"choice": ["gini", "nope"]}}},
            {"algorithm": "random_forest"},
            "search.space.criterion",
        ),
    ]
    for search, extra, field in cases:
        request = {**body(dataset, search), **extra}
        if "hyperparameters" not in extra and extra.get("algorithm") in ("ridge", "random_forest"):
            request["hyperparameters"] = {}
        assert await bad(client, request) == field, (search, extra)
    assert (await client.get("/api/ml/training-jobs")).json()["total"] == 0
    assert await platform.artifacts.list("models/") == []
    assert (await client.get("/api/ml/training-jobs/nope/trials")).status_code == 404


async def test_a_search_runs_on_the_embedded_single_worker_cluster(make_app: AppFactory) -> None:
    """One worker with one thread: the coordinator gives its thread up while its trials run, one at a time."""
    client, platform = await make_app()  # jobs.scheduler: local, jobs.workers: 1
    content, _, _ = table(120)
    uploaded = await client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "d"})
    search = {"space": {"n_estimators": {"int": [2, 6]}, "max_depth": {"choice": [2, None]}}, "trials": 3}
    request = body(uploaded.json()["id"], search, algorithm="random_forest", hyperparameters={})
    submitted = await client.post("/api/ml/training-jobs", json=request)
    job = await wait_for(client, submitted.json()["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    trials = await trials_of(client, job["id"])
    assert len(trials) == 3 and len({repr(t["params"]) for t in trials}) == 3
    assert len({t["worker"] for t in trials}) == 1 and sum(t["best"] for t in trials) == 1
    await platform.training.stop()
