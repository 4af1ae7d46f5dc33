"""Drift through HTTP: reference samples from every source, checks that find a shift and only that shift,
reports, plots and the drift score metric."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.platform import Platform
from mlplatform.stores.predictions import PredictionRecord
from tests.api.conftest import AppFactory
from tests.api.models import FEATURES, reference
from tests.api.test_monitoring_api import logged

PNG = b"\x89PNG\r\n\x1a\n"
CITIES = ["paris", "oslo", "rome"]


def numeric_rows(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Four standard normal features; `shift` moves f1 by that many standard deviations."""
    frame = pd.DataFrame(np.random.default_rng(seed).normal(0, 1, (n, len(FEATURES))), columns=FEATURES)
    frame["f1"] += shift
    return frame


def csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


async def register(
    client: httpx.AsyncClient,
    name: str,
    path: Path,
    metadata: dict[str, Any],
    reference_part: bytes | None = None,
    expect: int = 201,
) -> dict[str, Any]:
    files: dict[str, Any] = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
    if reference_part is not None:
        files["reference"] = ("reference.csv", reference_part, "text/csv")
    response = await client.post(
        f"/api/ml/models/{name}/versions", files=files, data={"metadata": json.dumps(metadata)}
    )
    assert response.status_code == expect, response.text
    return dict(response.json())


async def predict(client: httpx.AsyncClient, model: str, frame: pd.DataFrame) -> None:
    instances = frame.to_dict(orient="records")
    response = await client.post("/api/ml/predict/batch", json={"model": model, "instances": instances})
    assert response.status_code == 200, response.text


async def check(client: httpx.AsyncClient, model: str, **params: Any) -> dict[str, Any]:
    response = await client.post(f"/api/ml/models/{model}/drift-check", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def by_feature(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in report["features"]}


async def test_a_shift_of_one_feature_is_found_with_an_uploaded_reference(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend)
    ref = reference("sklearn-forest-skops", tmp_path)
    await register(client, "clf", ref.path, ref.metadata, csv(numeric_rows(2_000, seed=0)))

    summary = (await client.get("/api/ml/models/clf/versions/1/reference")).json()
    assert summary["source"] == "upload" and summary["rows"] == summary["source_rows"] == 2_000
    assert [(f["name"], f["kind"], f["missing_rate"]) for f in summary["features"]] == [
        (name, "numeric", 0.0) for name in FEATURES
    ]
    assert sum(summary["features"][0]["histogram"]["counts"]) == 2_000

    await predict(client, "clf", numeric_rows(600, seed=1))
    await logged(client, "clf", 600)
    calm = await check(client, "clf", window="1h")
    assert calm["status"] == "ok" and calm["drift"] is False and calm["drifted_features"] == []
    assert calm["sampled_rows"] == 600 and calm["reference_rows"] == 2_000 and calm["trigger"] == "manual"
    assert all(f["status"] == "ok" and not f["drift_adjusted"] for f in calm["features"])

    await predict(client, "clf", numeric_rows(600, seed=2, shift=1.0))
    await logged(client, "clf", 1_200)
    shifted = await check(client, "clf", version="1")
    assert shifted["drift"] is True and shifted["drifted_features"] == ["f1"]
    f1 = by_feature(shifted)["f1"]
    assert f1["adjusted_p_value"] < 1e-6 and f1["distance_name"] == "wasserstein_normalised"
    assert 0.3 < f1["distance"] < 0.7  # half the window moved by one sd
    assert len(f1["histogram"]["reference"]) == len(f1["histogram"]["edges"]) + 1

    listed = (await client.get("/api/ml/models/clf/drift-reports")).json()
    assert listed["total"] == 2 and [r["id"] for r in listed["items"]] == [shifted["id"], calm["id"]]
    assert "features" not in listed["items"][0] and listed["items"][0]["from"] < listed["items"][0]["to"]
    paged = (await client.get("/api/ml/models/clf/drift-reports", params={"limit": 1, "offset": 1})).json()
    assert [r["id"] for r in paged["items"]] == [calm["id"]]
    assert (await client.get("/api/ml/models/clf/drift-reports", params={"version": 2})).json()["total"] == 0
    full = (await client.get(f"/api/ml/models/clf/drift-reports/{shifted['id']}")).json()
    assert full == shifted
    assert (await client.get(f"/api/ml/models/other/drift-reports/{shifted['id']}")).status_code == 404

    png = await client.get(f"/api/ml/models/clf/drift-reports/{shifted['id']}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG)

    metrics = (await client.get("/actuator/prometheus")).text
    scores = {
        line.split('feature="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ml_feature_drift_score{") and 'model_id="clf"' in line
    }
    assert set(scores) == set(FEATURES)
    assert scores["f1"] > 0.999999 and scores["f0"] < 0.95


def log_rows(platform: Platform, model: str, frame: pd.DataFrame) -> list[PredictionRecord]:
    """Predictions as the log writer would write them (serving cannot warm up a pipeline that one-hot
    encodes a string feature yet, so the inputs of a string-typed feature are logged here)."""
    version = platform.registry.resolve(model).id
    return [
        PredictionRecord(
            id=new_id(),
            model=model,
            version=version,
            variant=None,
            request_id=None,
            inputs=list(row),
            prediction=1,
            probabilities=None,
            confidence=None,
            latency_ms=1.0,
            cached=False,
            created_at=utcnow(),
        )
        for row in frame.itertuples(index=False)
    ]


async def test_a_new_category_drifts_a_string_feature(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend)
    ref = reference("sklearn-forest-skops", tmp_path)
    await register(client, "clf", ref.path, {**ref.metadata, "feature_types": {"f3": "string"}})
    rng = np.random.default_rng(0)
    train = numeric_rows(1_000, seed=0).astype(object)
    train["f3"] = rng.choice(CITIES, 1_000)
    put = await client.put("/api/ml/models/clf/versions/1/reference", json={"rows": train.to_dict("records")})
    assert put.status_code == 200, put.text
    assert put.json()["source"] == "rows"
    assert [f["kind"] for f in put.json()["features"]] == ["numeric"] * 3 + ["categorical"]
    assert sorted(put.json()["features"][3]["histogram"]["labels"]) == sorted(CITIES)

    current = numeric_rows(400, seed=1).astype(object)
    current["f3"] = rng.choice([*CITIES, "berlin"], 400, p=[0.3, 0.3, 0.3, 0.1])
    await asyncio.to_thread(platform.serving.logs.store.append, log_rows(platform, "clf", current))
    report = await check(client, "clf")
    assert report["sampled_rows"] == 400
    assert report["drift"] is True and report["drifted_features"] == ["f3"]
    city = by_feature(report)["f3"]
    assert city["kind"] == "categorical" and city["distance_name"] == "jensen_shannon"
    histogram = city["histogram"]
    assert histogram["reference"][histogram["labels"].index("berlin")] == 0
    assert histogram["current"][histogram["labels"].index("berlin")] > 20
    png = await client.get(f"/api/ml/models/clf/drift-reports/{report['id']}/plot.png")
    assert png.content.startswith(PNG)


async def test_the_reference_comes_from_the_training_dataset(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend)
    data = numeric_rows(3_000, seed=5)
    data["target"] = (data["f0"] > 0).astype(int)
    parquet = io.BytesIO()
    data.to_parquet(parquet, index=False)
    uploaded = await client.post(
        "/api/ml/datasets",
        files={"file": ("train.parquet", parquet.getvalue(), "application/octet-stream")},
        data={"name": "train"},
    )
    assert uploaded.status_code == 201, uploaded.text
    ref = reference("sklearn-forest-skops", tmp_path)
    dataset_id = uploaded.json()["id"]
    await register(client, "clf", ref.path, {**ref.metadata, "training_dataset_id": dataset_id})
    summary = (await client.get("/api/ml/models/clf/versions/1/reference")).json()
    assert summary["source"] == "dataset" and summary["dataset_id"] == dataset_id
    assert summary["rows"] == 3_000 and [f["name"] for f in summary["features"]] == FEATURES

    # Lineage may name a dataset this server does not hold: the version is registered without a reference.
    await register(client, "clf", ref.path, {**ref.metadata, "training_dataset_id": "elsewhere-42"})
    assert (await client.get("/api/ml/models/clf/versions/2/reference")).status_code == 404


async def test_put_replaces_the_reference_and_wrong_columns_are_named(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    await register(client, "clf", ref.path, ref.metadata, csv(numeric_rows(500, seed=0)))
    url = "/api/ml/models/clf/versions/1/reference"

    partial = numeric_rows(500, seed=0).drop(columns=["f2", "f3"])
    refused = await client.put(url, files={"file": ("r.csv", csv(partial), "text/csv")})
    assert refused.status_code == 422, refused.text
    assert "missing columns f2, f3" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"][0]["missing"] == ["f2", "f3"]
    odd = await client.put(url, json={"rows": [{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "colour": "red"}] * 20})
    assert odd.status_code == 422 and "unknown columns colour" in odd.json()["error"]["message"]
    text = numeric_rows(50, seed=0).astype(object)
    text.loc[3, "f1"] = "tall"
    wrong = await client.put(url, files={"file": ("r.csv", csv(text), "text/csv")})
    assert wrong.status_code == 422 and "'f1' is numeric" in wrong.json()["error"]["message"]
    few = await client.put(url, json={"rows": [{"f0": 1, "f1": 2, "f2": 3, "f3": 4}] * 3})
    assert few.status_code == 422 and "at least 10 rows" in few.json()["error"]["message"]
    assert (await client.get(url)).json()["rows"] == 500  # unchanged by the refusals

    replaced = await client.put(url, files={"file": ("r.csv", csv(numeric_rows(800, seed=9)), "text/csv")})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["rows"] == 800 and (await client.get(url)).json()["rows"] == 800
    plain = await client.put(url, content=b"f0,f1\n1,2\n", headers={"content-type": "text/csv"})
    assert plain.status_code == 415


async def test_a_version_without_reference_gets_a_clear_conflict(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    bad = csv(numeric_rows(100, seed=0).drop(columns=["f3"]))
    refused = await register(client, "clf", ref.path, ref.metadata, bad, expect=422)
    assert "missing columns f3" in refused["error"]["message"]
    assert (await client.get("/api/ml/models/clf")).status_code == 404  # nothing was registered

    await register(client, "clf", ref.path, ref.metadata)
    answer = await client.post("/api/ml/models/clf/drift-check")
    assert answer.status_code == 409
    assert "no reference sample" in answer.json()["error"]["message"]
    assert "PUT /api/ml/models/clf/versions/1/reference" in answer.json()["error"]["message"]
    assert (await client.get("/api/ml/models/clf/versions/1/reference")).status_code == 404
    assert (await client.post("/api/ml/models/clf/drift-check", params={"window": "2x"})).status_code == 422


async def test_metadata_reference_sample_is_a_reference_too(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = reference("sklearn-forest-skops", tmp_path)
    sample = numeric_rows(40, seed=3).to_numpy().tolist()
    await register(client, "clf", ref.path, {**ref.metadata, "reference_sample": sample})
    summary = (await client.get("/api/ml/models/clf/versions/1/reference")).json()
    assert summary["source"] == "metadata" and summary["rows"] == 40 and len(summary["features"]) == 4

    # A few rows serve the compile check but no drift check: registered, without a reference.
    few = numeric_rows(5, seed=3).to_numpy().tolist()
    await register(client, "clf", ref.path, {**ref.metadata, "reference_sample": few})
    assert (await client.get("/api/ml/models/clf/versions/2/reference")).status_code == 404


async def test_a_scheduled_check_reports_drift_and_raises_the_drift_alert(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(ml={"monitoring": {"enabled": False, "check-window": "1h"}})
    ref = reference("sklearn-forest-skops", tmp_path)
    await register(client, "clf", ref.path, ref.metadata, csv(numeric_rows(2_000, seed=0)))
    await register(client, "plain", ref.path, ref.metadata)  # no reference: skipped, not an error

    await predict(client, "clf", numeric_rows(600, seed=1))
    await logged(client, "clf", 600)
    calm = await client.post("/api/ml/monitoring/check")
    assert calm.status_code == 200, calm.text
    assert (await client.get("/api/ml/alerts")).json()["items"] == []

    await predict(client, "clf", numeric_rows(600, seed=2, shift=1.0))
    await logged(client, "clf", 1_200)
    assert (await client.post("/api/ml/monitoring/check")).status_code == 200
    firing = (await client.get("/api/ml/alerts", params={"state": "firing"})).json()["items"]
    assert [(a["rule"], a["model"]) for a in firing] == [("ModelDriftDetected", "clf")], firing
    reports = (await client.get("/api/ml/models/clf/drift-reports")).json()["items"]
    assert [r["trigger"] for r in reports] == ["scheduled", "scheduled"]
    assert [r["drift"] for r in reports] == [True, False]
    assert (await client.get("/api/ml/models/plain/drift-reports")).json()["total"] == 0


async def test_drift_alerts_can_be_turned_off(make_app: AppFactory) -> None:
    names = set()
    for alert_on_drift in (True, False):
        client, _ = await make_app(ml={"monitoring": {"enabled": False, "alert-on-drift": alert_on_drift}})
        names = {r["name"] for r in (await client.get("/api/ml/alert-rules")).json()}
        assert ("ModelDriftDetected" in names) is alert_on_drift
    assert "ModelAccuracyDegraded" in names
