"""Actuator endpoints: health with components, probes, info, Prometheus exposition, metrics JSON."""

from __future__ import annotations

import httpx

from tests.api.conftest import AppFactory
from tests.services import free_port


async def test_health_is_up_with_its_four_components(client: httpx.AsyncClient) -> None:
    response = await client.get("/actuator/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "UP"
    assert set(body["components"]) == {"db", "cache", "storage", "jobs"}  # jobs: UP until first connected
    for component in body["components"].values():
        assert component["status"] == "UP"
        assert component["details"]["latency_ms"] >= 0


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/actuator/health/liveness")).json() == {"status": "UP"}
    readiness = await client.get("/actuator/health/readiness")
    assert readiness.status_code == 200
    assert readiness.json() == {"status": "UP"}


async def test_readiness_is_503_before_start_up_and_while_draining(make_app: AppFactory) -> None:
    client, platform = await make_app()
    platform.lifecycle.started = False
    response = await client.get("/actuator/health/readiness")
    assert response.status_code == 503
    assert response.json()["details"]["lifecycle"] == "starting"
    platform.lifecycle.started = True
    platform.lifecycle.draining = True
    response = await client.get("/actuator/health/readiness")
    assert response.status_code == 503
    assert response.json()["details"]["lifecycle"] == "draining"
    assert (await client.get("/actuator/health/liveness")).status_code == 200


async def test_unreachable_database_makes_health_down_and_readiness_503(make_app: AppFactory) -> None:
    closed_port = free_port()
    client, platform = await make_app(
        wait=False,
        database={
            "url": f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/test",
            "pool": {"connection-timeout": 1000},
        },
    )
    health = await client.get("/actuator/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "DOWN"
    assert body["components"]["db"]["status"] == "DOWN"
    assert "error" in body["components"]["db"]["details"]
    assert body["components"]["cache"]["status"] == "UP"
    readiness = await client.get("/actuator/health/readiness")
    assert readiness.status_code == 503
    assert "db" in readiness.json()["details"]
    assert not platform.lifecycle.started
    assert (await client.get("/actuator/health/liveness")).status_code == 200


async def test_info_names_version_commit_python_libraries_and_profile(client: httpx.AsyncClient) -> None:
    body = (await client.get("/actuator/info")).json()
    assert body["app"]["profile"] == "default"
    assert body["version"]
    assert body["git"]["commit"]
    assert body["python"]["version"].startswith("3.")
    assert body["libraries"]["scikit-learn"]
    assert body["libraries"]["onnxruntime"]
    assert body["backends"] == {"database": "sqlite", "cache": "memory", "storage": "file"}


async def test_info_warns_when_api_keys_are_disabled(make_app: AppFactory) -> None:
    client, _ = await make_app(security={"api-keys": {"enabled": False}})
    body = (await client.get("/actuator/info")).json()
    assert body["security"]["api_keys_enabled"] is False
    assert "disabled" in body["security"]["warning"]


async def test_prometheus_exposes_system_metrics_with_application_tags(make_app: AppFactory) -> None:
    client, _ = await make_app(management={"tags": {"application": "ml-platform-prod", "environment": "ci"}})
    await client.get("/actuator/health")
    response = await client.get("/actuator/prometheus")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("ml_system_memory_used_mb", "ml_system_memory_usage_percent", "ml_system_cpu_usage_percent"):
        lines = [line for line in text.splitlines() if line.startswith(name + "{")]
        assert lines, name
        assert 'application="ml-platform-prod"' in lines[0] and 'environment="ci"' in lines[0]
    assert "process_resident_memory_bytes" in text
    assert (
        'ml_health_component_up{application="ml-platform-prod",component="db",environment="ci"} 1.0' in text
    )
    assert 'http_server_requests_seconds_count{method="GET",route="/actuator/health",status="200"}' in text


async def test_metrics_json_lists_names_and_reads_one(client: httpx.AsyncClient) -> None:
    await client.get("/actuator/health")
    names = (await client.get("/actuator/metrics")).json()["names"]
    assert "ml_system_memory_used_mb" in names
    one = (await client.get("/actuator/metrics/ml_system_memory_used_mb")).json()
    assert one["measurements"][0]["statistic"] == "VALUE"
    assert one["measurements"][0]["value"] > 0
    timer = (
        await client.get(
            "/actuator/metrics/http_server_requests_seconds", params={"tag": "route:/actuator/health"}
        )
    ).json()
    statistics = {m["statistic"]: m["value"] for m in timer["measurements"]}
    assert statistics["COUNT"] >= 1
    assert {"tag": "route", "values": ["/actuator/health"]} in timer["availableTags"]


async def test_unknown_metric_is_404_with_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/actuator/metrics/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "nope" in response.json()["error"]["message"]


async def test_until_start_up_is_done_requests_are_refused_with_503_before_anything_is_done(
    make_app: AppFactory,
) -> None:
    # A load balancer without readiness checks (nginx) sends requests as soon as the port opens: a 503 is
    # passed on to another instance, where a model not yet known here would have been a 404.
    client, platform = await make_app()
    platform.lifecycle.started = False
    platform.lifecycle.startup_error = "OperationalError: connection refused"
    for method, path in [
        ("POST", "/api/ml/predict"),
        ("POST", "/v2/models/m/infer"),
        ("GET", "/api/ml/models"),
        ("GET", "/v2/models/m"),
    ]:
        response = await client.request(method, path, content=b"{}", headers={"X-API-Key": "wrong"})
        assert response.status_code == 503, (method, path)
        assert response.headers["retry-after"] == "1"
        assert "starting: OperationalError: connection refused" in response.text
    assert (await client.get("/api/ml/models")).json()["error"]["code"] == "unavailable"
    for open_path in ["/actuator/health/liveness", "/v2/health/live", "/openapi.json"]:
        assert (await client.get(open_path)).status_code == 200, open_path
    platform.lifecycle.started = True
    assert (await client.get("/api/ml/models")).status_code == 200
