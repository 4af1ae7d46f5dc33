"""Feedback and performance through HTTP: ids of every kind, duplicates, bad labels, and metrics that equal
scikit-learn's on the same predictions and labels."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_recall_fscore_support,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.platform import Platform
from mlplatform.stores.predictions import PredictionRecord
from tests.api.conftest import AppFactory
from tests.api.models import Reference, reference, upload


async def registered(client: httpx.AsyncClient, tmp_path: Path, label: str, name: str) -> Reference:
    ref = reference(label, tmp_path)
    await upload(client, name, ref.path, ref.metadata)
    return ref


async def logged(client: httpx.AsyncClient, model: str, count: int) -> list[dict[str, Any]]:
    """The model's logged predictions, once the writer has written at least `count` (it writes behind)."""
    async with asyncio.timeout(15):
        while True:
            logs = (await client.get("/api/ml/predictions", params={"model": model, "limit": 10_000})).json()
            if len(logs) >= count:
                return list(logs)
            await asyncio.sleep(0.05)


async def batch(client: httpx.AsyncClient, model: str, rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/ml/predict/batch", json={"model": model, "instances": rows.tolist(), **extra}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def single(client: httpx.AsyncClient, model: str, row: np.ndarray, **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/ml/predict", json={"model": model, "features": row.tolist(), **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def send(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/api/ml/feedback", json=body)


async def history(client: httpx.AsyncClient, prediction_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/ml/feedback/{prediction_id}")
    return list(response.json()) if response.status_code == 200 else []


async def test_feedback_by_prediction_id_request_id_and_batch_ids(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend)
    ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    one = await single(client, "clf", ref.X[0], request_id="order-1")
    two = await single(client, "clf", ref.X[1], request_id="order-2")
    many = await batch(client, "clf", ref.X[2:12], request_id="bulk")
    await logged(client, "clf", 12)
    ids = [p["prediction_id"] for p in many["predictions"]]

    first = await send(client, {"prediction_id": one["prediction_id"], "actual": 1})
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0, "unknown": 0, "unknown_ids": []}

    stranger = new_id()
    items = [
        {"request_id": "order-2", "actual": 0},
        *({"prediction_id": id_, "actual": i % 2} for i, id_ in enumerate(ids)),
        {"prediction_id": stranger, "actual": 1},
        {"request_id": "no-such-request", "actual": 1},
        {"prediction_id": one["prediction_id"], "actual": "0", "timestamp": "2026-01-02T03:04:05Z"},
    ]
    answer = await send(client, items)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "accepted": 12,
        "duplicates": 1,
        "unknown": 2,
        "unknown_ids": [stranger, "no-such-request"],
    }
    assert [h["actual"] for h in await history(client, two["prediction_id"])] == [0]
    assert [h["actual"] for h in await history(client, ids[3])] == [1]
    # Last wins, and the replaced value is kept with when it was replaced; "0" became the class 0.
    audit = await history(client, one["prediction_id"])
    assert [(h["actual"], h["superseded_at"] is None) for h in audit] == [(1, False), (0, True)]
    assert audit[1]["observed_at"].startswith("2026-01-02T03:04:05")
    assert audit[0]["actor"] and audit[0]["received_at"]

    # A batch's request_id names several predictions: refused, and nothing of the request is written.
    refused = await send(
        client, [{"prediction_id": ids[0], "actual": 0}, {"request_id": "bulk", "actual": 1}]
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "1.request_id"
    assert [h["actual"] for h in await history(client, ids[0])] == [0]
    assert (await client.get(f"/api/ml/feedback/{stranger}")).status_code == 404


async def test_wrong_labels_are_refused_by_item_and_field_and_nothing_is_written(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend)
    clf = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    reg = await registered(client, tmp_path, "sklearn-regressor-skops", "reg")
    a, b = await single(client, "clf", clf.X[0]), await single(client, "clf", clf.X[1])
    r = await single(client, "reg", reg.X[0])
    await logged(client, "clf", 2)
    await logged(client, "reg", 1)

    cases = [
        (
            [
                {"prediction_id": a["prediction_id"], "actual": 1},
                {"prediction_id": b["prediction_id"], "actual": 7},
            ],
            "1.actual",
        ),
        ([{"prediction_id": a["prediction_id"], "actual": "dog"}], "0.actual"),
        ([{"prediction_id": r["prediction_id"], "actual": "12.5"}], "0.actual"),
        ([{"prediction_id": r["prediction_id"], "actual": True}], "0.actual"),
        ([{"prediction_id": a["prediction_id"], "actual": [1]}], "0.actual"),
        ([{"prediction_id": a["prediction_id"], "request_id": "x", "actual": 1}], "0"),
        ([{"actual": 1}], "0"),
        ({"prediction_id": a["prediction_id"]}, "actual"),
    ]
    for body, field in cases:
        response = await send(client, body)
        assert response.status_code == 422, (body, response.text)
        assert field in [d["field"] for d in response.json()["error"]["details"]], (body, response.text)
    for raw in (b'[{"prediction_id": "%s", "actual": NaN}]', b'{"prediction_id": "%s", "actual": 1e999}'):
        body = raw % r["prediction_id"].encode()
        response = await client.post(
            "/api/ml/feedback", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
    assert await history(client, a["prediction_id"]) == []
    assert await history(client, r["prediction_id"]) == []
    accepted = await send(client, {"prediction_id": r["prediction_id"], "actual": 12})
    assert accepted.json()["accepted"] == 1


async def test_more_than_ten_thousand_items_are_refused(make_app: AppFactory) -> None:
    client, _ = await make_app()
    items = [{"prediction_id": new_id(), "actual": 1}] * 10_001
    response = await send(client, items)
    assert response.status_code == 413
    assert response.json()["error"]["details"][0]["field"] == "body"
    fits = await send(client, items[:10_000])
    assert fits.status_code == 200 and fits.json()["unknown"] == 10_000


async def test_a_predictor_key_may_send_feedback_and_a_viewer_may_not(make_app: AppFactory) -> None:
    admin, _ = await make_app()
    keys = {}
    for role in ("predictor", "viewer"):
        created = await admin.post("/api/admin/api-keys", json={"name": role, "role": role, "owner": "t"})
        assert created.status_code == 201, created.text
        keys[role] = created.json()["key"]
    body = {"prediction_id": new_id(), "actual": 1}
    as_predictor = await admin.post("/api/ml/feedback", json=body, headers={"X-API-Key": keys["predictor"]})
    assert as_predictor.status_code == 200
    as_viewer = await admin.post("/api/ml/feedback", json=body, headers={"X-API-Key": keys["viewer"]})
    assert as_viewer.status_code == 403


def labels_for(predicted: list[int]) -> list[int]:
    """Actual values that disagree with every third prediction."""
    return [p if i % 3 else 1 - p for i, p in enumerate(predicted)]


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")  # float32 probabilities
async def test_classifier_metrics_equal_scikit_learn_for_a_window_and_a_version(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend, ml={"predictions": {"batch-size": 16}})
    ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    await upload(client, "clf", ref.path, ref.metadata)  # version 2: the same model
    v1 = await batch(client, "clf/1", ref.X[:40], request_id="v1")
    singles = [await single(client, "clf/1", row) for row in ref.X[40:46]]
    v2 = await batch(client, "clf/2", ref.X[46:70])
    await logged(client, "clf", 70)

    answers = [*v1["predictions"], *singles]  # version 1: 46 predictions, 36 of them labelled
    labelled = answers[:30] + answers[-6:]
    predicted = [a["prediction"] for a in labelled]
    actual = labels_for(predicted)
    items = [
        {"prediction_id": a["prediction_id"], "actual": y} for a, y in zip(labelled, actual, strict=True)
    ]
    v2_labelled = v2["predictions"][:10]
    v2_actual = labels_for([a["prediction"] for a in v2_labelled])[::-1]
    items += [
        {"prediction_id": a["prediction_id"], "actual": y}
        for a, y in zip(v2_labelled, v2_actual, strict=True)
    ]
    assert (await send(client, items)).json()["accepted"] == 46

    one = (await client.get("/api/ml/models/clf/monitoring", params={"window": "1h", "version": "1"})).json()
    assert one["version"] == v1["version"] and one["task"] == "classification"
    assert (one["predictions"], one["labelled"]) == (46, 36)
    assert one["label_coverage"] == pytest.approx(36 / 46)
    proba = np.array([[a["probabilities"]["0"], a["probabilities"]["1"]] for a in labelled])
    expect_classification(one["classification"], actual, predicted, proba)

    everything = (await client.get("/api/ml/models/clf/monitoring", params={"window": "24h"})).json()
    assert everything["version"] is None and (everything["predictions"], everything["labelled"]) == (70, 46)
    all_answers = labelled + v2_labelled
    all_proba = np.array([[a["probabilities"]["0"], a["probabilities"]["1"]] for a in all_answers])
    all_predicted = [a["prediction"] for a in all_answers]
    expect_classification(everything["classification"], actual + v2_actual, all_predicted, all_proba)

    by_id = await client.get("/api/ml/models/clf/monitoring", params={"version": v2["version"]})
    assert by_id.json()["labelled"] == 10
    later = utcnow() + timedelta(hours=1)
    empty = await client.get(
        "/api/ml/models/clf/monitoring",
        params={"from": later.isoformat(), "to": (later + timedelta(hours=1)).isoformat()},
    )
    assert empty.json()["predictions"] == 0 and empty.json()["classification"] is None
    metrics = (await client.get("/actuator/prometheus")).text
    accuracy = accuracy_score(actual + v2_actual, all_predicted)
    assert (
        f'ml_model_accuracy{{application="mlplatform",environment="development",model_id="clf"}} {accuracy}'
        in metrics
    )
    assert (await client.get("/api/ml/models/clf/monitoring", params={"window": "2w"})).status_code == 422
    assert (await client.get("/api/ml/models/clf/monitoring", params={"version": "9"})).status_code == 404


def expect_classification(
    found: dict[str, Any], actual: list[int], predicted: list[int], proba: np.ndarray
) -> None:
    """`found` equals scikit-learn's own functions on the same labels, predictions and probabilities."""
    assert found["accuracy"] == pytest.approx(accuracy_score(actual, predicted))
    assert found["precision_macro"] == pytest.approx(
        precision_score(actual, predicted, average="macro", zero_division=0.0)
    )
    assert found["recall_macro"] == pytest.approx(
        recall_score(actual, predicted, average="macro", zero_division=0.0)
    )
    assert found["f1_macro"] == pytest.approx(f1_score(actual, predicted, average="macro", zero_division=0.0))
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, zero_division=0.0)
    for label in (0, 1):
        scores = found["per_class"][str(label)]
        assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(
            (precision[label], recall[label], f1[label])
        )
        assert scores["support"] == support[label]
    assert found["with_probabilities"] == len(actual)
    assert found["roc_auc"] == pytest.approx(roc_auc_score(actual, proba[:, 1]))
    assert found["log_loss"] == pytest.approx(log_loss(actual, proba))
    assert found["brier_score"] == pytest.approx(brier_score_loss(actual, proba[:, 1]))
    observed, mean_predicted = calibration_curve(actual, proba[:, 1], n_bins=10)
    assert [b["observed_frequency"] for b in found["calibration"]] == pytest.approx(observed.tolist())
    assert [b["mean_predicted"] for b in found["calibration"]] == pytest.approx(mean_predicted.tolist())
    assert sum(b["count"] for b in found["calibration"]) == len(actual)


async def test_regressor_metrics_equal_scikit_learn_and_late_feedback_counts_by_prediction_time(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend)
    ref = await registered(client, tmp_path, "sklearn-regressor-skops", "reg")
    answers = (await batch(client, "reg", ref.X[:20]))["predictions"] + [
        await single(client, "reg", ref.X[20])
    ]
    await logged(client, "reg", 21)
    predicted = [a["prediction"] for a in answers]
    actual = [round(p + (-1) ** i * (i + 1) * 0.5, 3) for i, p in enumerate(predicted)]
    items = [{"prediction_id": a["prediction_id"], "actual": y} for a, y in zip(answers, actual, strict=True)]
    assert (await send(client, items)).json()["accepted"] == 21
    old_id = await logged_days_ago(platform, "reg", ref.X[21], days=3)
    late = {"prediction_id": old_id, "actual": 5.0, "timestamp": (utcnow() - timedelta(days=2)).isoformat()}
    assert (await send(client, late)).json() == {
        "accepted": 1,
        "duplicates": 0,
        "unknown": 0,
        "unknown_ids": [],
    }

    day = (await client.get("/api/ml/models/reg/monitoring", params={"window": "24h"})).json()
    assert (day["predictions"], day["labelled"], day["label_coverage"]) == (21, 21, 1.0)
    assert day["classification"] is None
    assert day["regression"]["mae"] == pytest.approx(mean_absolute_error(actual, predicted))
    assert day["regression"]["rmse"] == pytest.approx(root_mean_squared_error(actual, predicted))
    assert day["regression"]["r2"] == pytest.approx(r2_score(actual, predicted))
    week = (await client.get("/api/ml/models/reg/monitoring", params={"window": "7d"})).json()
    assert (week["predictions"], week["labelled"]) == (22, 22)


async def logged_days_ago(platform: Platform, model: str, row: np.ndarray, *, days: int) -> str:
    """A prediction logged `days` ago, written through the store as the writer would have."""
    entry = platform.registry.resolve(model)
    record = PredictionRecord(
        id=new_id(),
        model=model,
        version=entry.id,
        variant=None,
        request_id=None,
        inputs=row.tolist(),
        prediction=1.0,
        probabilities=None,
        confidence=None,
        latency_ms=1.0,
        cached=False,
        created_at=utcnow() - timedelta(days=days),
    )
    await asyncio.to_thread(platform.serving.logs.store.append, [record])
    return record.id


async def test_feedback_answers_are_json(make_app: AppFactory) -> None:
    client, _ = await make_app()
    response = await client.post(
        "/api/ml/feedback", content=b"[]", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert orjson.loads(response.content)["error"]["code"] == "invalid_input"
