"""Cross-cutting HTTP behaviour: request ids, gzip, body limits, the error shape, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from tests.api.conftest import AppFactory


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    generated = await client.get("/actuator/health/liveness")
    assert len(generated.headers["x-request-id"]) == 26
    kept = await client.get("/actuator/health/liveness", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    hostile = await client.get("/actuator/health/liveness", headers={"X-Request-ID": "a b\x7f<script>"})
    assert hostile.headers["x-request-id"] != "a b\x7f<script>"


async def test_large_json_is_gzipped_small_is_not(make_app: AppFactory) -> None:
    client, _ = await make_app(server={"compression": {"enabled": True, "min-response-size": 200}})
    big = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert big.headers.get("content-encoding") == "gzip"
    assert big.json()["info"]["title"] == "mlplatform"
    small = await client.get("/actuator/health/liveness", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


async def test_compression_can_be_turned_off(make_app: AppFactory) -> None:
    client, _ = await make_app(server={"compression": {"enabled": False}})
    response = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers


async def test_body_over_the_limit_is_413_with_json_error(make_app: AppFactory) -> None:
    client, _ = await make_app(server={"max-body-size": 2048})
    response = await client.post("/api/admin/api-keys", content=b"x" * 4096)
    assert response.status_code == 413
    body = response.json()
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["details"]["limit_bytes"] == 2048

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while the route reads it
        for _ in range(8):
            yield b"y" * 1024

    streamed = await client.post("/api/admin/api-keys", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "payload_too_large"

    # the predict paths (answered without FastAPI's routing); V2 errors have the protocol's shape
    for path in ("/api/ml/predict", "/api/ml/predict/batch", "/v2/models/m/infer"):
        over = await client.post(path, content=b"x" * 4096)
        assert over.status_code == 413 and error_code(over) == "payload_too_large", path
        streamed = await client.post(path, content=chunks())
        assert streamed.status_code == 413 and error_code(streamed) == "payload_too_large", path
        at_limit = await client.post(path, content=b"x" * 2048)  # within the limit: read, then refused
        assert at_limit.status_code == 422, (path, at_limit.text)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    return str(body["code"] if isinstance(body["error"], str) else body["error"]["code"])


async def test_unknown_path_and_wrong_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await client.delete("/actuator/health")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/actuator/health" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_the_predict_paths_refuse_a_body_of_another_media_type(client: httpx.AsyncClient) -> None:
    body = b'{"model": "m", "features": [1.0]}'
    for path in ("/api/ml/predict", "/api/ml/predict/batch", "/v2/models/m/infer"):
        refused = await client.post(path, content=body, headers={"Content-Type": "text/plain"})
        assert refused.status_code == 415, (path, refused.text)
        details = refused.json()["details" if path.startswith("/v2/") else "error"]
        assert "Content-Type" in str(details), details
        for media in ("application/json", "application/json; charset=utf-8", None):
            headers = {"Content-Type": media} if media else {}
            assert (await client.post(path, content=body, headers=headers)).status_code != 415, media
    binary = await client.post(
        "/v2/models/m/infer", content=b"{}", headers={"Content-Type": "application/octet-stream"}
    )
    assert binary.status_code != 415
