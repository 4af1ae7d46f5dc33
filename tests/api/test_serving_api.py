"""Predictions through HTTP: every format, validation, caches, deadlines and fallbacks, logs, metrics."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psycopg
import pytest

from mlplatform.platform import Platform
from mlplatform.serving.runtimes.base import RawPrediction, Runtime
from mlplatform.serving.schemas import PredictResponse
from tests.api.conftest import AppFactory
from tests.api.models import FEATURES, REFERENCES, expected, migrate, onnx_reference, reference, upload
from tests.services import RedisServer


async def predict(client: httpx.AsyncClient, model: str, features: Any, **extra: Any) -> httpx.Response:
    return await client.post("/api/ml/predict", json={"model": model, "features": features, **extra})


async def registered(
    client: httpx.AsyncClient, tmp_path: Path, label: str = "sklearn-forest-skops", name: str = "m"
) -> Any:
    ref = reference(label, tmp_path)
    await upload(client, name, ref.path, ref.metadata)
    return ref


async def test_every_format_predicts_like_its_library(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(**backend)
    for ref in [reference(label, tmp_path) for label in REFERENCES] + [onnx_reference(tmp_path)]:
        name = ref.label
        await upload(client, name, ref.path, ref.metadata)
        labels, probabilities = expected(ref)
        rows = ref.X[:12]
        for i, row in enumerate(rows):
            answer = (await predict(client, name, dict(zip(FEATURES, row.tolist(), strict=True)))).json()
            assert answer["version"].startswith(f"{name}-v1-"), answer
            if ref.task == "classification":
                assert answer["prediction"] == labels[i].item(), (name, i)
                if probabilities is not None:
                    got = [answer["probabilities"][str(c)] for c in ref.model.classes_]
                    np.testing.assert_allclose(got, probabilities[i], atol=1e-5)
                    assert answer["confidence"] == pytest.approx(max(got))
            else:
                assert answer["prediction"] == pytest.approx(labels[i].item(), rel=1e-5, abs=1e-4), name
        batch = await client.post("/api/ml/predict/batch", json={"model": name, "instances": rows.tolist()})
        assert batch.status_code == 200
        predictions = [p["prediction"] for p in batch.json()["predictions"]]
        if ref.task == "classification":
            assert predictions == labels[:12].tolist(), name
        else:
            np.testing.assert_allclose(predictions, labels[:12], rtol=1e-5, atol=1e-4)


async def test_string_labels_come_back_as_labels(make_app: AppFactory, tmp_path: Path) -> None:
    from mlplatform.formats import ArtifactFormat
    from tests import fixtures_models as fm

    model, X, _ = fm.train_sklearn_classifier(labels=["cat", "dog"])
    path = fm.write_artifact(model, ArtifactFormat.SKOPS, tmp_path)
    client, _ = await make_app()
    await upload(client, "pets", path, {"feature_names": FEATURES})
    answer = (await predict(client, "pets", X[0].tolist())).json()
    assert answer["prediction"] == model.predict(X[:1])[0]
    assert set(answer["probabilities"]) == {"cat", "dog"}


async def test_invalid_features_name_each_problem(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    await registered(client, tmp_path)
    response = await predict(client, "m", {"f0": 1.0, "f1": "abc", "f3": True, "colour": 2})
    assert response.status_code == 422
    problems = {d["field"]: d["problem"] for d in response.json()["error"]["details"]}
    assert problems["features.f2"] == "missing"
    assert "number" in problems["features.f1"]
    assert "number" in problems["features.f3"]
    assert "not a feature" in problems["features.colour"]
    short = await predict(client, "m", [1.0, 2.0])
    assert short.status_code == 422 and "expects 4 features" in short.json()["error"]["message"]
    nan = await client.post(
        "/api/ml/predict",
        content=b'{"model": "m", "features": [NaN, 1, 2, 3]}',
        headers={"Content-Type": "application/json"},
    )
    assert nan.status_code == 422
    assert nan.json()["error"]["details"] == [
        {"field": "features.0", "problem": "NaN is not a finite JSON number"}
    ]
    huge = await client.post(
        "/api/ml/predict",
        content=b'{"model": "m", "features": [1e999, 1, 2, 3]}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 422
    assert huge.json()["error"]["details"] == [
        {"field": "features.0", "problem": "1e999 is not a finite JSON number"}
    ]
    batch = await client.post(
        "/api/ml/predict/batch", json={"model": "m", "instances": [[1, 2, 3, 4], [1, 2]]}
    )
    assert batch.status_code == 422 and batch.json()["error"]["details"][0]["field"] == "instances[1]"
    assert (await predict(client, "missing-model", [1, 2, 3, 4])).status_code == 404
    assert (await predict(client, "m@nope", [1, 2, 3, 4])).status_code == 404
    assert (await predict(client, "Bad Name", [1, 2, 3, 4])).status_code == 422


async def test_batches_are_chunked_and_bounded(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(
        ml={"predictions": {"batch-size": 3}}, security={"limits": {"max-batch-rows": 10}}
    )
    ref = await registered(client, tmp_path)
    ten = await client.post("/api/ml/predict/batch", json={"model": "m", "instances": ref.X[:10].tolist()})
    assert ten.status_code == 200
    assert [p["prediction"] for p in ten.json()["predictions"]] == ref.model.predict(ref.X[:10]).tolist()
    eleven = await client.post("/api/ml/predict/batch", json={"model": "m", "instances": ref.X[:11].tolist()})
    assert eleven.status_code == 422 and eleven.json()["error"]["details"][0]["field"] == "instances"


async def test_prediction_cache_hits_and_the_confidence_gate(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(ml={"predictions": {"cache-min-confidence": 0.0}})
    ref = await registered(client, tmp_path)
    first = (await predict(client, "m", ref.X[0].tolist())).json()
    second = (await predict(client, "m", ref.X[0].tolist())).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["prediction"] == first["prediction"] and second["probabilities"] == first["probabilities"]
    assert second["prediction_id"] != first["prediction_id"]

    gated, _ = await make_app(ml={"predictions": {"cache-min-confidence": 1.0}})
    await registered(gated, tmp_path, name="g")
    probabilities = ref.model.predict_proba(ref.X)
    unsure = int(np.argmin(probabilities.max(axis=1)))
    assert probabilities[unsure].max() < 1.0
    for _ in range(2):
        assert (await predict(gated, "g", ref.X[unsure].tolist())).json()["cached"] is False

    off, _ = await make_app(ml={"predictions": {"enable-cache": False}})
    await registered(off, tmp_path, name="o")
    for _ in range(2):
        assert (await predict(off, "o", ref.X[0].tolist())).json()["cached"] is False


async def test_redis_answers_are_written_behind_the_request_and_then_hit(
    redis_url: str, make_app: AppFactory, tmp_path: Path
) -> None:
    client, platform = await make_app(
        cache={"url": redis_url}, ml={"predictions": {"cache-min-confidence": 0.0}}
    )
    ref = await registered(client, tmp_path)
    rows = ref.X[:12].tolist()
    # The answers are queued, then written to Redis behind the requests (pipelined with any others).
    first = await asyncio.gather(*(predict(client, "m", row) for row in rows))
    assert [r.json()["cached"] for r in first] == [False] * len(rows)
    version = platform.registry.resolve("m").id
    keys = [platform.serving.predictions.key(version, row) for row in rows]
    async with asyncio.timeout(5):  # written at the next turn of the loop, not while the request waited
        while None in [await platform.cache.get(key) for key in keys]:
            await asyncio.sleep(0.01)
    second = [(await predict(client, "m", row)).json() for row in rows]
    assert [r["cached"] for r in second] == [True] * len(rows)
    assert [r["prediction"] for r in second] == [r.json()["prediction"] for r in first]


async def test_a_write_backlog_is_skipped_and_counted(
    redis_url: str, make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mlplatform.serving.prediction_cache.MAX_PENDING", 2)
    client, platform = await make_app(
        cache={"url": redis_url}, ml={"predictions": {"cache-min-confidence": 0.0}}
    )
    await registered(client, tmp_path)
    cache = platform.serving.predictions
    for i in range(3):  # no turn of the loop in between: the first two wait, the third finds no room
        await cache.put(f"k{i}", {"prediction": i}, 1.0)
    await cache.close()
    assert [await platform.cache.get(f"k{i}") is not None for i in range(3)] == [True, True, False]
    metrics = (await client.get("/actuator/prometheus")).text
    assert 'reason="backlog"} 1.0' in metrics


async def test_a_dead_redis_skips_the_cache_and_still_answers(
    private_redis: RedisServer, make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app(cache={"url": private_redis.url, "timeout-ms": 100})
    ref = await registered(client, tmp_path)
    assert (await predict(client, "m", ref.X[0].tolist())).status_code == 200
    private_redis.stop()
    for row in ref.X[:5]:
        response = await predict(client, "m", row.tolist())
        assert response.status_code == 200 and response.json()["cached"] is False
    metrics = (await client.get("/actuator/prometheus")).text
    assert (
        'ml_prediction_cache_skipped_total{application="mlplatform",environment="development",reason="unavailable"}'
        in metrics
    )


class SlowRuntime(Runtime):
    """Stands in for a model too slow for the deadline (the one double here: for the model, not a service)."""

    def __init__(self, inner: Runtime, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.name, self.description, self.n_features = "slow", inner.description, inner.n_features

    def predict(self, X: np.ndarray) -> RawPrediction:
        time.sleep(self.seconds)
        return self.inner.predict(X)


def slow_down(platform: Platform, name: str, seconds: float = 0.5) -> None:
    for loaded in platform.serving.models.models.values():
        if loaded.entry.name == name:
            loaded.runtime, loaded.inline = SlowRuntime(loaded.runtime, seconds), False


async def test_timeouts_answer_from_the_cache_then_the_fallback_then_504(
    make_app: AppFactory, tmp_path: Path
) -> None:
    fallbacks = {"m": {"constant": "unknown"}, "n": {"model": "backup"}}
    client, platform = await make_app(
        ml={"predictions": {"timeout-ms": 100, "cache-min-confidence": 0.0, "fallbacks": fallbacks}}
    )
    ref = await registered(client, tmp_path)
    await registered(client, tmp_path, name="backup")
    await registered(client, tmp_path, name="n")
    await registered(client, tmp_path, name="bare")
    fresh = (await predict(client, "m", ref.X[0].tolist())).json()
    for name in ("n", "bare"):
        await predict(client, name, ref.X[0].tolist())
    for name in ("m", "n", "bare"):
        slow_down(platform, name)
    cached = (await predict(client, "m", ref.X[0].tolist())).json()
    assert cached["cached"] is True and cached["prediction"] == fresh["prediction"]
    constant = (await predict(client, "m", ref.X[1].tolist())).json()
    assert constant["fallback"] is True and constant["prediction"] == "unknown"
    assert (constant["version"], constant["probabilities"], constant["cached"]) == ("fallback", None, False)
    assert set(constant) == set(PredictResponse.model_fields)
    other = (await predict(client, "n", ref.X[2].tolist())).json()
    assert other["fallback"] is True and other["model"] == "backup"
    assert other["prediction"] == ref.model.predict(ref.X[2:3])[0]
    timeout = await predict(client, "bare", ref.X[3].tolist())
    assert timeout.status_code == 504 and timeout.json()["error"]["code"] == "timeout"
    unknown = (await predict(client, "m@nope", ref.X[0].tolist())).json()
    assert unknown["fallback"] is True and unknown["prediction"] == "unknown"


async def poll_logs(client: httpx.AsyncClient, model: str, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(15):
        while True:
            logs = (await client.get("/api/ml/predictions", params={"model": model, "limit": 1000})).json()
            if len(logs) >= count:
                return list(logs)
            await asyncio.sleep(0.1)


async def test_prediction_logs_land_in_the_database(
    backend: dict[str, Any], make_app: AppFactory, tmp_path: Path
) -> None:
    # batch-size 2: a batch of 5 is predicted, and logged, as three blocks of consecutive ids
    client, _ = await make_app(**backend, ml={"predictions": {"batch-size": 2}})
    ref = await registered(client, tmp_path)
    answer = (await predict(client, "m", ref.X[0].tolist(), request_id="order-42")).json()
    body = {"model": "m", "instances": ref.X[:5].tolist(), "request_id": "bulk-7"}
    batch = (await client.post("/api/ml/predict/batch", json=body)).json()
    logs = await poll_logs(client, "m", 6)
    assert len(logs) == 6
    single = next(log for log in logs if log["prediction_id"] == answer["prediction_id"])
    assert single["request_id"] == "order-42"
    assert single["inputs"] == pytest.approx(ref.X[0].tolist())
    assert single["prediction"] == answer["prediction"] and single["version"] == answer["version"]
    assert single["latency_ms"] > 0
    logged = {log["prediction_id"]: log for log in logs if log["request_id"] == "bulk-7"}
    assert len(logged) == 5
    for row, predicted in zip(ref.X[:5], batch["predictions"], strict=True):
        entry = logged[predicted["prediction_id"]]
        assert entry["inputs"] == pytest.approx(row.tolist())
        assert entry["prediction"] == predicted["prediction"] and entry["version"] == batch["version"]
        assert entry["probabilities"] == pytest.approx(predicted["probabilities"])
        assert entry["confidence"] == pytest.approx(predicted["confidence"])
        assert entry["cached"] is False and entry["latency_ms"] > 0
    newest = (await client.get("/api/ml/predictions", params={"model": "m", "limit": 3})).json()
    assert len(newest) == 3
    assert (await client.get("/api/ml/predictions", params={"model": "other"})).json() == []


async def test_v2_inferences_are_logged_as_one_block(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = await registered(client, tmp_path)
    rows = ref.X[:4].astype(np.float32)
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    response = await client.post("/v2/models/m/infer", json={"id": "v2-run", "inputs": [tensor]})
    assert response.status_code == 200, response.text
    logs = await poll_logs(client, "m", 4)
    assert [log["request_id"] for log in logs] == ["v2-run"] * 4
    assert sorted(log["prediction_id"] for log in logs) == [log["prediction_id"] for log in logs]
    np.testing.assert_allclose([log["inputs"] for log in logs], rows)
    assert [log["prediction"] for log in logs] == ref.model.predict(ref.X[:4]).tolist()


async def test_log_sampling_can_turn_logging_off(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app(ml={"predictions": {"log-sample-rate": 0.0}})
    ref = await registered(client, tmp_path)
    for row in ref.X[:5]:
        await predict(client, "m", row.tolist())
    assert platform.serving.logs.depth == 0
    await asyncio.sleep(0.6)
    assert (await client.get("/api/ml/predictions")).json() == []


async def test_a_blocked_database_makes_the_log_queue_drop_and_count(
    postgres_url: str, postgres_dsn: str, make_app: AppFactory, tmp_path: Path
) -> None:
    await migrate(postgres_url)
    client, _ = await make_app(database={"url": postgres_url}, ml={"predictions": {"log-queue-size": 3}})
    ref = await registered(client, tmp_path)
    schema = postgres_url.rsplit("%3D", 1)[1]
    with psycopg.connect(postgres_dsn) as blocker:
        # in a thread: the lock may have to wait for a transaction of the app on this event loop
        await asyncio.to_thread(
            blocker.execute, f'LOCK TABLE "{schema}".prediction_logs IN ACCESS EXCLUSIVE MODE'
        )
        statuses = []
        for row in np.resize(ref.X, (40, 4)):
            statuses.append((await predict(client, "m", row.tolist())).status_code)
            await asyncio.sleep(0.02)
        assert set(statuses) == {200}
        metrics = (await client.get("/actuator/prometheus")).text
        dropped = [
            line for line in metrics.splitlines() if line.startswith("ml_prediction_log_dropped_total")
        ]
        assert dropped and float(dropped[0].rsplit(" ", 1)[1]) > 0
        blocker.rollback()
    await poll_logs(client, "m", 3)


async def test_serving_metrics_are_exported(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app()
    ref = await registered(client, tmp_path)
    for row in ref.X[:3]:
        await predict(client, "m", row.tolist())
    text = (await client.get("/actuator/prometheus")).text
    for needle in (
        'ml_predictions_total{application="mlplatform",environment="development",model_id="m"} 3.0',
        'ml_predictions_latency_bucket{application="mlplatform",environment="development",le="5.0",model_id="m"}',
        "ml_model_predictions_total{",
        'ml_predictions_throughput{application="mlplatform",environment="development",model_id="m"} 3.0',
        'ml_models_active{application="mlplatform",environment="development"} 1.0',
        'ml_models_deployed{application="mlplatform",environment="development"} 1.0',
        'ml_model_age_days{application="mlplatform",environment="development",model_id="m"}',
        "ml_model_load_seconds_count",
        "ml_prediction_log_queue_depth",
        # answered by the fast path, still timed under its route
        'http_server_requests_seconds_count{method="POST",route="/api/ml/predict",status="200"} 3.0',
    ):
        assert needle in text, needle


async def test_preloaded_models_are_loaded_before_readiness(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(database={"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"})
    await registered(client, tmp_path, name="hot")
    _, warm = await make_app(
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"}, ml={"models": {"preload": ["hot"]}}
    )
    assert [m.entry.name for m in warm.serving.models.models.values()] == ["hot"]


async def test_purged_versions_leave_the_model_cache(make_app: AppFactory, tmp_path: Path) -> None:
    client, platform = await make_app()
    ref = await registered(client, tmp_path)
    await predict(client, "m", ref.X[0].tolist())
    assert len(platform.serving.models) == 1
    await client.delete("/api/ml/models/m/versions/1", params={"purge": "true"})
    assert len(platform.serving.models) == 0
    assert (await predict(client, "m", ref.X[0].tolist())).status_code == 404


async def test_batch_arrays_are_checked_as_strictly_as_single_rows(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client, _ = await make_app()
    ref = await registered(client, tmp_path)
    rows = ref.X[:3].tolist()
    for bad, problem in (("1.5", "number"), (True, "number"), (None, "null")):
        instances = [row[:] for row in rows]
        instances[2][1] = bad
        response = await client.post("/api/ml/predict/batch", json={"model": "m", "instances": instances})
        assert response.status_code == 422, bad
        detail = response.json()["error"]["details"][0]
        assert detail["field"] == "instances[2].f1" and problem in detail["problem"]


async def test_compressed_and_chunked_bodies_get_the_same_answer_as_plain_ones(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """Plain, gzip and chunked bodies give the same answer, request id and rate-limit headers."""
    client, _ = await make_app(ml={"predictions": {"enable-cache": False}})
    ref = await registered(client, tmp_path)
    body = orjson.dumps({"model": "m", "features": ref.X[0].tolist()})

    async def chunks() -> Any:
        yield body[:10]
        yield body[10:]

    sent = {
        "plain": await client.post("/api/ml/predict", content=body, headers={"X-Request-ID": "r-1"}),
        "gzip": await client.post(
            "/api/ml/predict",
            content=gzip.compress(body),
            headers={"Content-Encoding": "gzip", "X-Request-ID": "r-1"},
        ),
        "chunked": await client.post("/api/ml/predict", content=chunks(), headers={"X-Request-ID": "r-1"}),
    }
    answers = {how: response.json() for how, response in sent.items()}
    for how, response in sent.items():
        assert response.status_code == 200, (how, response.text)
        assert response.headers["x-request-id"] == "r-1", how
        assert response.headers["content-type"] == "application/json", how
        assert "x-ratelimit-remaining" in response.headers, how
        for field in ("model", "version", "prediction", "probabilities", "confidence", "cached", "fallback"):
            assert answers[how][field] == answers["plain"][field], (how, field)
    assert len({a["prediction_id"] for a in answers.values()}) == 3
    # the answer is built by hand: it must stay exactly the documented schema
    assert set(answers["plain"]) == set(PredictResponse.model_fields)
    PredictResponse.model_validate(answers["plain"])
    text = (await client.get("/actuator/prometheus")).text
    assert (
        'http_server_requests_seconds_count{method="POST",route="/api/ml/predict",status="200"} 3.0' in text
    )


async def test_the_fast_path_answers_errors_in_the_error_shape(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, platform = await make_app()
    await registered(client, tmp_path)
    broken = await client.post("/api/ml/predict", content=b'{"model": "m", "features": [1,', headers={})
    assert broken.status_code == 422
    assert broken.json()["error"]["details"][0]["field"] == "body"
    extra = await predict(client, "m", [0.0] * len(FEATURES), colour="red")
    assert extra.status_code == 422
    assert extra.json()["error"]["details"][0]["field"] == "colour"
    too_long = await predict(client, "m", [0.0] * len(FEATURES), request_id="x" * 129)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "request_id"
    anonymous = await client.post(
        "/api/ml/predict", json={"model": "m", "features": [0.0]}, headers={"X-API-Key": ""}
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"

    async def fails(_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(platform.serving, "predict", fails)
    crashed = await client.post(
        "/api/ml/predict", json={"model": "m", "features": [0.0]}, headers={"X-Request-ID": "r-500"}
    )
    assert crashed.status_code == 500
    assert crashed.json()["error"] == {
        "code": "internal_error",
        "message": "internal error; the request id finds it in the logs",
        "details": {"request_id": "r-500"},
    }
    assert crashed.headers["x-request-id"] == "r-500"
    text = (await client.get("/actuator/prometheus")).text
    assert (
        'http_server_requests_seconds_count{method="POST",route="/api/ml/predict",status="500"} 1.0' in text
    )
