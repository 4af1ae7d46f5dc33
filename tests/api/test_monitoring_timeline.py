"""`GET /api/ml/models/{name}/monitoring/timeline`: performance per time bucket, each bucket equal to what
`GET …/monitoring?from=&to=` answers for its bounds, buckets aligned in UTC, bad sizes refused by field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, root_mean_squared_error

from mlplatform.clock import utcnow
from mlplatform.ids import new_id
from mlplatform.monitoring import performance, timeline
from mlplatform.platform import Platform
from mlplatform.stores.predictions import PredictionRecord
from tests.api.conftest import AppFactory
from tests.api.test_alerts_api import key_for, sample
from tests.api.test_monitoring_api import registered, send


async def logged_at(
    platform: Platform, model: str, rows: np.ndarray, predictions: list[Any], at: datetime
) -> list[str]:
    """Predictions logged at `at`, written through the store as the log writer would have."""
    entry = platform.registry.resolve(model)
    records = [
        PredictionRecord(
            id=new_id(),
            model=model,
            version=entry.id,
            variant=None,
            request_id=None,
            inputs=row.tolist(),
            prediction=prediction,
            probabilities=None,
            confidence=None,
            latency_ms=1.0,
            cached=False,
            created_at=at,
        )
        for row, prediction in zip(rows, predictions, strict=True)
    ]
    await asyncio.to_thread(platform.serving.logs.store.append, records)
    return [r.id for r in records]


async def a_week_of_labels(client: httpx.AsyncClient, platform: Platform, model: str, x: np.ndarray) -> None:
    """Five moments over the last week, with a different accuracy and label coverage at each."""
    now = utcnow()
    for days_ago, right, wrong, unlabelled in ((6, 4, 0, 1), (4, 3, 3, 0), (2, 1, 3, 2), (0.01, 5, 5, 5)):
        count = right + wrong + unlabelled
        at = now - timedelta(days=days_ago)
        ids = await logged_at(platform, model, x[:count], [1] * count, at)
        labels = [1] * right + [0] * wrong
        items = [{"prediction_id": i, "actual": y} for i, y in zip(ids, labels, strict=False)]
        assert (await send(client, items)).json()["accepted"] == right + wrong


def same_as_performance(bucket: dict[str, Any], direct: dict[str, Any]) -> None:
    """A bucket's numbers are those `GET …/monitoring` gives for the bucket's bounds."""
    counts = ("from", "to", "predictions", "labelled", "label_coverage")
    assert {k: bucket[k] for k in counts} == {k: direct[k] for k in counts}
    classification, regression = direct["classification"] or {}, direct["regression"] or {}
    for name, value in (
        ("accuracy", classification.get("accuracy")),
        ("f1_macro", classification.get("f1_macro")),
        ("mae", regression.get("mae")),
        ("rmse", regression.get("rmse")),
    ):
        assert bucket[name] == (None if value is None else pytest.approx(value, rel=1e-12)), name


async def test_each_bucket_is_the_services_own_performance_of_its_bounds(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(**backend, ml={"monitoring": {"enabled": False}})
    ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    await a_week_of_labels(client, platform, "clf", ref.X)

    found = await client.get("/api/ml/models/clf/monitoring/timeline", params={"window": "7d"})
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["model"], body["version"], body["task"], body["bucket"]) == (
        "clf",
        None,
        "classification",
        "6h",
    )
    buckets = body["buckets"]
    assert buckets[0]["from"] == body["from"] and buckets[-1]["to"] == body["to"]
    for earlier, later in zip(buckets, buckets[1:], strict=False):
        assert earlier["to"] == later["from"]
        assert datetime.fromisoformat(later["from"]).hour % 6 == 0  # whole multiples of 6 h in UTC
    assert len(buckets) in (28, 29)
    assert sum(b["predictions"] for b in buckets) == 5 + 6 + 6 + 15
    filled = [b for b in buckets if b["predictions"]]
    assert [(b["labelled"], b["accuracy"]) for b in filled] == [
        (4, 1.0),
        (6, 0.5),
        (4, 0.25),
        (10, 0.5),
    ]
    assert [b["label_coverage"] for b in filled] == pytest.approx([0.8, 1.0, 4 / 6, 10 / 15])
    assert all(b["accuracy"] is None and b["label_coverage"] is None for b in buckets if not b["predictions"])
    for bucket in filled:
        direct = await client.get(
            "/api/ml/models/clf/monitoring", params={"from": bucket["from"], "to": bucket["to"]}
        )
        same_as_performance(bucket, direct.json())
    whole = await client.get("/api/ml/models/clf/monitoring", params={"from": body["from"], "to": body["to"]})
    same_as_performance(body["total"], whole.json())
    assert (body["total"]["predictions"], body["total"]["labelled"]) == (32, 24)

    one = await client.get("/api/ml/models/clf/monitoring/timeline", params={"window": "7d", "version": "1"})
    assert one.json()["version"] == platform.registry.resolve("clf").id
    assert [b["labelled"] for b in one.json()["buckets"] if b["predictions"]] == [4, 6, 4, 10]


async def test_the_timeline_sets_no_accuracy_gauge(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app(ml={"monitoring": {"enabled": False}})
    ref = await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    await a_week_of_labels(client, platform, "clf", ref.X)
    assert (
        await client.get("/api/ml/models/clf/monitoring/timeline", params={"window": "7d"})
    ).status_code == 200
    assert await sample(client, "ml_model_accuracy", {"model_id": "clf"}) is None
    day = (await client.get("/api/ml/models/clf/monitoring", params={"window": "24h"})).json()
    assert await sample(client, "ml_model_accuracy", {"model_id": "clf"}) == day["classification"]["accuracy"]


async def test_a_regressor_has_rmse_and_mae_per_bucket(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app(ml={"monitoring": {"enabled": False}})
    ref = await registered(client, tmp_path, "sklearn-regressor-skops", "reg")
    now = utcnow()
    for hours_ago, errors in ((30, [1.0, -1.0]), (3, [2.0, 2.0, -4.0])):
        ids = await logged_at(
            platform, "reg", ref.X[: len(errors)], [10.0] * len(errors), now - timedelta(hours=hours_ago)
        )
        await send(
            client, [{"prediction_id": i, "actual": 10.0 + e} for i, e in zip(ids, errors, strict=True)]
        )
    body = (await client.get("/api/ml/models/reg/monitoring/timeline", params={"window": "2d"})).json()
    assert body["bucket"] == "1h" and body["task"] == "regression"
    filled = [b for b in body["buckets"] if b["labelled"]]
    for bucket in filled:
        direct = await client.get(
            "/api/ml/models/reg/monitoring", params={"from": bucket["from"], "to": bucket["to"]}
        )
        same_as_performance(bucket, direct.json())
    assert all(b["accuracy"] is None for b in body["buckets"])
    found = [value for b in filled for value in (b["mae"], b["rmse"])]
    assert found == pytest.approx([1.0, 1.0, 8 / 3, 8**0.5])


async def test_bucket_sizes_windows_and_errors(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(ml={"monitoring": {"enabled": False}})
    await registered(client, tmp_path, "sklearn-forest-skops", "clf")
    url = "/api/ml/models/clf/monitoring/timeline"
    day = (await client.get(url)).json()  # default window 24h: hourly
    assert day["bucket"] == "1h" and len(day["buckets"]) in (24, 25)
    assert all(b["predictions"] == 0 and b["labelled"] == 0 for b in day["buckets"])
    month = (await client.get(url, params={"window": "30d"})).json()
    assert month["bucket"] == "1d" and len(month["buckets"]) in (30, 31)
    assert all(datetime.fromisoformat(b["from"]).hour == 0 for b in month["buckets"][1:])
    fixed = await client.get(
        url, params={"from": "2026-01-01T00:30:00Z", "to": "2026-01-01T02:00:00Z", "bucket": "30m"}
    )
    assert [(b["from"][11:16], b["to"][11:16]) for b in fixed.json()["buckets"]] == [
        ("00:30", "01:00"),
        ("01:00", "01:30"),
        ("01:30", "02:00"),
    ]
    for params, field in (
        ({"window": "30d", "bucket": "5m"}, "bucket"),
        ({"bucket": "1s"}, "bucket"),
        ({"bucket": "1m"}, "bucket"),
        ({"bucket": "h"}, "bucket"),
        ({"window": "soon"}, "window"),
    ):
        refused = await client.get(url, params=params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == field
    assert (await client.get("/api/ml/models/nope/monitoring/timeline")).status_code == 404
    viewer = {"X-API-Key": await key_for(client, "viewer")}
    assert (await client.get(url, headers=viewer)).status_code == 200


def test_bounds_align_to_the_epoch_and_cut_the_ends() -> None:
    start = datetime(2026, 3, 1, 10, 20, tzinfo=UTC)
    found = timeline.bounds(start, start + timedelta(hours=2), timedelta(hours=1))
    assert [(a.strftime("%H:%M"), b.strftime("%H:%M")) for a, b in found] == [
        ("10:20", "11:00"),
        ("11:00", "12:00"),
        ("12:00", "12:20"),
    ]
    assert timeline.bucket_size(None, timedelta(days=30)) == ("1d", timedelta(days=1))


@pytest.mark.parametrize("seed", range(40))
def test_bucket_scores_equal_scikit_learns(seed: int) -> None:
    """The vectorised scores are scikit-learn's, as `performance.classification` and `regression` call it:
    integer, string and boolean labels, classes missing from one side, one row."""
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, 60))
    kinds: list[list[Any]] = [[0, 1], [0, 1, 2, 3], ["cat", "dog", "eel"], [True, False]]
    labels = kinds[seed % len(kinds)]
    actual = [labels[i] for i in rng.integers(0, len(labels), rows)]
    predicted = [labels[i] for i in rng.integers(0, max(len(labels) - seed % 2, 1), rows)]
    accuracy, f1 = performance.label_scores(actual, predicted)
    assert accuracy == pytest.approx(accuracy_score(actual, predicted), rel=1e-12)
    assert f1 == pytest.approx(f1_score(actual, predicted, average="macro", zero_division=0.0), rel=1e-12)
    numbers = rng.normal(size=rows) * 10
    guesses = numbers + rng.normal(size=rows)
    mae, rmse = performance.error_scores(numbers.tolist(), guesses.tolist())
    assert mae == pytest.approx(mean_absolute_error(numbers, guesses), rel=1e-12)
    assert rmse == pytest.approx(root_mean_squared_error(numbers, guesses), rel=1e-12)
