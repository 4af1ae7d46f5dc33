"""Training jobs through the HTTP API on a real Dask cluster: train, register, predict, cancel, refuse."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from mlplatform.platform import Platform
from tests.api.conftest import AppFactory, local_cluster
from tests.api.test_security import create_key

TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One LocalCluster (2 worker processes, 1 thread each) for the module's apps, as `jobs.scheduler`."""
    with local_cluster() as cluster:
        yield str(cluster.scheduler_address)


def table(rows: int = 300, seed: int = 0) -> tuple[bytes, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    label = np.where(x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=rows) > 0, "yes", "no")
    price = 3 * x[:, 0] - 2 * x[:, 2] + rng.normal(scale=0.1, size=rows)
    lines = ["x1,x2,x3,flag,city,label,price"]
    for i in range(rows):
        city = "paris" if i % 2 else "lyon"
        lines.append(f"{x[i, 0]:.6f},{x[i, 1]:.6f},{x[i, 2]:.6f},{i % 2},{city},{label[i]},{price[i]:.6f}")
    return ("\n".join(lines) + "\n").encode(), {"x": x, "label": label, "price": price}


async def app_with_dataset(
    make_app: AppFactory, scheduler: str, rows: int = 300
) -> tuple[Any, Platform, str]:
    client, platform = await make_app(jobs={"scheduler": scheduler})
    content, _ = table(rows)
    response = await client.post(
        "/api/ml/datasets", files={"file": ("data.csv", content)}, data={"name": "houses"}
    )
    assert response.status_code == 201, response.text
    return client, platform, str(response.json()["id"])


async def wait_for(client: httpx.AsyncClient, job_id: str, states: set[str], timeout: float = 90) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            job = (await client.get(f"/api/ml/training-jobs/{job_id}")).json()
            if job["state"] in states:
                return job
            await asyncio.sleep(0.1)


def job_body(dataset_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "model": "houses",
        "dataset": dataset_id,
        "target": "label",
        "features": ["x1", "x2", "x3", "flag"],
        "algorithm": "xgboost",
        "hyperparameters": {"n_estimators": 20, "max_depth": 3},
    }
    return {**body, **extra}


async def test_an_xgboost_job_trains_registers_with_lineage_and_metrics_and_predicts(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    response = await client.post("/api/ml/training-jobs", json=job_body(dataset, tags={"team": "risk"}))
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["state"] == "queued" and submitted["task"] == "classification"
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    assert job["progress"]["fraction"] == 1.0 and job["progress"]["current"] == 20
    assert job["progress"]["unit"] == "round" and job["worker"].startswith("tcp://127.0.0.1")
    assert job["attempt"] == 1 and job["started_at"] and job["finished_at"]
    assert set(job["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert set(job["timings"]) == {"read", "fit", "evaluate", "save", "register"}
    assert all(seconds >= 0 for seconds in job["timings"].values()) and job["timings"]["fit"] > 0

    # The same split and model, trained here: the job's metrics are sklearn's on the validation rows.
    import xgboost
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import train_test_split

    _, data = table()
    X = np.column_stack([data["x"], np.arange(300) % 2]).round(6)
    y = (data["label"] == "yes").astype(int)
    train, val = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    train, val = np.sort(train), np.sort(val)  # the job keeps the dataset's row order
    X_train, X_val = np.asarray(X)[train], np.asarray(X)[val]
    y_train, y_val = np.asarray(y)[train], np.asarray(y)[val]
    local = xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(X_train, y_train)
    assert job["metrics"]["accuracy"] == pytest.approx(accuracy_score(y_val, local.predict(X_val)))
    assert job["metrics"]["log_loss"] == pytest.approx(log_loss(y_val, local.predict_proba(X_val)), rel=1e-4)

    version = (await client.get("/api/ml/models/houses/versions/1")).json()
    assert version["id"] == job["version_id"] and version["framework"] == "xgboost"
    assert version["training_job_id"] == job["id"] and version["training_dataset_id"] == dataset
    assert version["metrics"] == job["metrics"] and version["tags"] == {"team": "risk"}
    assert [f["name"] for f in version["features"]] == ["x1", "x2", "x3", "flag"]
    assert version["classes"] == ["no", "yes"]
    predicted = await client.post(
        "/api/ml/predict", json={"model": "houses", "features": {"x1": 2.0, "x2": 1.0, "x3": 0.0, "flag": 1}}
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["prediction"] == "yes"

    history = (await client.get("/api/ml/models/houses/training-history")).json()
    assert [j["id"] for j in history["items"]] == [job["id"]] and history["items"][0]["version_id"]
    listed = (
        await client.get("/api/ml/training-jobs", params={"state": "succeeded", "model": "houses"})
    ).json()
    assert listed["total"] == 1
    assert (await client.get("/api/ml/training-jobs", params={"state": "failed"})).json()["total"] == 0
    health = (await client.get("/actuator/health")).json()
    assert health["components"]["jobs"]["status"] == "UP"


@pytest.mark.parametrize(
    ("algorithm", "target", "hyperparameters", "metric"),
    [
        ("random_forest", "price", {"n_estimators": 20, "max_depth": 4}, "r2"),
        ("lightgbm", "label", {"n_estimators": 15, "num_leaves": 7}, "roc_auc"),
        ("logistic_regression", "label", {"C": 0.5}, "accuracy"),
    ],
)
async def test_other_algorithms_train_register_in_a_safe_format_and_predict(
    make_app: AppFactory, scheduler: str, algorithm: str, target: str, hyperparameters: Any, metric: str
) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler)
    body = job_body(dataset, algorithm=algorithm, target=target, hyperparameters=hyperparameters)
    submitted = (await client.post("/api/ml/training-jobs", json=body)).json()
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    assert 0.7 < job["metrics"][metric] <= 1.0
    version = (await client.get("/api/ml/models/houses/versions/1")).json()
    assert version["artifact"]["format"] in {"skops", "lightgbm-text"}
    predicted = await client.post(
        "/api/ml/predict", json={"model": "houses", "features": {"x1": 2.0, "x2": 1.0, "x3": -1.0, "flag": 0}}
    )
    assert predicted.status_code == 200, predicted.text
    if target == "label":
        assert predicted.json()["prediction"] == "yes"
    else:  # the forest is seeded (the job's seed, 0): scikit-learn's own on the same rows predicts the same
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.metrics import r2_score

        X_train, y_train, X_val, y_val = split("price")
        local = RandomForestRegressor(**hyperparameters, random_state=0).fit(X_train, y_train)
        assert job["metrics"]["r2"] == pytest.approx(r2_score(y_val, local.predict(X_val)))
        row = np.array([[2.0, 1.0, -1.0, 0.0]])
        assert predicted.json()["prediction"] == pytest.approx(local.predict(row)[0], rel=1e-6)


def split(target: str, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """`table()`'s training and validation rows as a job splits them (x1..x3, flag; the dataset's order)."""
    from sklearn.model_selection import train_test_split

    _, data = table()
    X = np.column_stack([data["x"], np.arange(300) % 2]).round(6)
    y = (data["label"] == "yes").astype(int) if target == "label" else data["price"].round(6)
    stratify = y if target == "label" else None
    train, val = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=stratify)
    train, val = np.sort(train), np.sort(val)
    return X[train], y[train], X[val], y[val]


async def test_a_job_is_reproducible_from_its_seed(make_app: AppFactory, scheduler: str) -> None:
    """The same job twice trains the same forest (bootstrap and split from its seed); another seed another."""
    client, _, dataset = await app_with_dataset(make_app, scheduler)
    hyperparameters = {"n_estimators": 10, "max_depth": 3}
    jobs = []
    for seed in (7, 7, 8):
        body = job_body(dataset, algorithm="random_forest", target="price", hyperparameters=hyperparameters)
        response = await client.post("/api/ml/training-jobs", json={**body, "seed": seed})
        assert response.status_code == 202, response.text
        assert response.json()["seed"] == seed
        jobs.append(await wait_for(client, response.json()["id"], TERMINAL))
    assert [job["state"] for job in jobs] == ["succeeded"] * 3
    assert jobs[0]["metrics"] == jobs[1]["metrics"] != jobs[2]["metrics"]
    row = {"x1": 1.5, "x2": 0.0, "x3": -0.5, "flag": 1}
    answers = [
        (await client.post("/api/ml/predict", json={"model": f"houses/{n}", "features": row})).json()
        for n in (1, 2, 3)
    ]
    assert answers[0]["prediction"] == answers[1]["prediction"] != answers[2]["prediction"]
    # the job's metrics are scikit-learn's forest with random_state = the seed, on the split that seed draws
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import r2_score

    X_train, y_train, X_val, y_val = split("price", seed=8)
    local = RandomForestRegressor(**hyperparameters, random_state=8).fit(X_train, y_train)
    assert jobs[2]["metrics"]["r2"] == pytest.approx(r2_score(y_val, local.predict(X_val)))


async def test_a_long_job_reports_progress_and_cancels_leaving_nothing(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler, rows=2000)
    body = job_body(dataset, hyperparameters={"n_estimators": 200_000, "max_depth": 6})
    submitted = (await client.post("/api/ml/training-jobs", json=body)).json()
    async with asyncio.timeout(60):
        while True:
            job = (await client.get(f"/api/ml/training-jobs/{submitted['id']}")).json()
            if job["state"] == "running" and (job["progress"]["current"] or 0) > 0:
                break
            await asyncio.sleep(0.1)
    assert job["progress"]["total"] == 200_000 and job["progress"]["metric_name"] == "logloss"
    assert 0 < job["progress"]["fraction"] < 1 and job["progress"]["eta_seconds"] > 0
    first = job["progress"]["current"]
    await asyncio.sleep(0.6)
    job = (await client.get(f"/api/ml/training-jobs/{submitted['id']}")).json()
    assert job["progress"]["current"] > first
    cancelled = await client.post(f"/api/ml/training-jobs/{submitted['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
    job = await wait_for(client, submitted["id"], TERMINAL)  # how fast: benchmarks/training.py
    assert job["state"] == "cancelled" and job["version_id"] is None
    assert (await client.get("/api/ml/models/houses")).status_code == 404
    assert await platform.artifacts.list("models/") == []


async def bad(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/api/ml/training-jobs", json=body)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    return str(details[0]["field"] if isinstance(details, list) else details["field"])


async def test_each_bad_input_is_422_naming_the_field_and_queues_nothing(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"algorithm": "svm"}, "algorithm"),
        ({"hyperparameters": {"n_estimators": 5, "not_a_param": 1}}, "hyperparameters.not_a_param"),
        ({"hyperparameters": {"callbacks": []}}, "hyperparameters.callbacks"),
        (
            {"algorithm": "random_forest", "hyperparameters": {"n_estimators": -3}},
            "hyperparameters.n_estimators",
        ),
        ({"hyperparameters": {"learning_rate": 0}}, "hyperparameters.learning_rate"),
        ({"algorithm": "lightgbm", "hyperparameters": {"num_leaves": 1}}, "hyperparameters.num_leaves"),
        ({"algorithm": "logistic_regression", "hyperparameters": {"C": "x"}}, "hyperparameters.C"),
        ({"target": "nope"}, "target"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**31}, "seed"),
        ({"dataset": "01NOTADATASET"}, "dataset"),
        ({"model": "Bad Name!"}, "model"),
        ({"model": "houses-v3"}, "model"),
        ({"features": ["x1", "missing"]}, "features"),
        ({"features": ["x1", "label"]}, "features"),
        ({"target": "price", "task": "classification"}, "task"),
        ({"algorithm": "linear_regression"}, "algorithm"),
        ({"parent": "nomodel@production"}, "parent"),
        ({"validation": {"fraction": 1.5}}, "validation.fraction"),
    ]
    for change, field in cases:
        found = await bad(client, job_body(dataset, **change))
        assert found.endswith(field), (change, found)
    constant = io.BytesIO(b"a,b\n1,5\n2,5\n3,5\n")
    uploaded = await client.post(
        "/api/ml/datasets", files={"file": ("c.csv", constant.getvalue())}, data={"name": "constant"}
    )
    assert await bad(client, job_body(uploaded.json()["id"], target="b", features=["a"])) == "target"
    assert (await client.get("/api/ml/training-jobs")).json()["total"] == 0
    assert await platform.artifacts.list("models/") == []


async def test_viewers_read_jobs_and_only_editors_submit_or_cancel(
    make_app: AppFactory, scheduler: str
) -> None:
    client, _, dataset = await app_with_dataset(make_app, scheduler)
    viewer = (await create_key(client, "viewer"))["key"]
    editor = (await create_key(client, "editor"))["key"]
    refused = await client.post(
        "/api/ml/training-jobs", json=job_body(dataset), headers={"X-API-Key": viewer}
    )
    assert refused.status_code == 403
    accepted = await client.post(
        "/api/ml/training-jobs", json=job_body(dataset), headers={"X-API-Key": editor}
    )
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    assert (
        await client.get(f"/api/ml/training-jobs/{job_id}", headers={"X-API-Key": viewer})
    ).status_code == 200
    cancel = f"/api/ml/training-jobs/{job_id}/cancel"
    assert (await client.post(cancel, headers={"X-API-Key": viewer})).status_code == 403
    assert (await client.get("/api/ml/training-jobs/nope")).status_code == 404
    await wait_for(client, job_id, TERMINAL)


async def test_the_embedded_cluster_starts_on_first_job_and_closes_with_the_app(make_app: AppFactory) -> None:
    client, platform = await make_app()  # jobs.scheduler: local
    content, _ = table(120)
    dataset = (
        await client.post("/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "houses"})
    ).json()["id"]
    body = job_body(dataset, algorithm="random_forest", hyperparameters={"n_estimators": 5})
    job = await wait_for(
        client, (await client.post("/api/ml/training-jobs", json=body)).json()["id"], TERMINAL
    )
    assert job["state"] == "succeeded", job
    cluster = platform.training.engine._cluster
    assert cluster is not None and cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    await platform.training.stop()
    assert platform.training.engine._cluster is None


async def test_a_worker_reads_its_dataset_from_each_storage_backend(
    make_app: AppFactory, scheduler: str, backend: dict[str, Any]
) -> None:
    client, platform = await make_app(jobs={"scheduler": scheduler}, **backend)
    content, _ = table(150)
    uploaded = await client.post(
        "/api/ml/datasets", files={"file": ("d.csv", content)}, data={"name": "houses"}
    )
    body = job_body(uploaded.json()["id"], algorithm="lightgbm", hyperparameters={"n_estimators": 5})
    submitted = (await client.post("/api/ml/training-jobs", json=body)).json()
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "succeeded", job
    assert job["heartbeat_at"] >= job["started_at"]
    version = (await client.get("/api/ml/models/houses/versions/1/lineage")).json()
    assert (version["training_job_id"], version["training_dataset_id"]) == (job["id"], job["dataset"])


async def test_a_job_the_library_refuses_fails_with_its_message_and_registers_nothing(
    make_app: AppFactory, scheduler: str
) -> None:
    client, platform, dataset = await app_with_dataset(make_app, scheduler)
    # values each valid alone that only the fit judges together: an L1 penalty with a solver that has none
    hyperparameters = {"l1_ratio": 1, "solver": "lbfgs"}
    body = job_body(dataset, algorithm="logistic_regression", hyperparameters=hyperparameters)
    submitted = (await client.post("/api/ml/training-jobs", json=body)).json()
    job = await wait_for(client, submitted["id"], TERMINAL)
    assert job["state"] == "failed" and "lbfgs" in job["error"]
    assert "Traceback" not in job["error"] and job["version_id"] is None and job["finished_at"]
    assert (await client.get("/api/ml/models/houses")).status_code == 404
    assert await platform.artifacts.list("models/") == []
    assert (await client.get("/api/ml/training-jobs", params={"state": "failed"})).json()["total"] == 1
