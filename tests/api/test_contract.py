"""The API contract case by case: what the fuzz test finds or would find, what the OpenAPI document says."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mlplatform.bounds import INT32_MAX, INT64_MAX
from tests.api.conftest import AppFactory
from tests.api.models import migrate

TOO_BIG = "671015305141483659591680"
JSON = {"Content-Type": "application/json"}


def problems(response: httpx.Response) -> dict[str, str]:
    return {d["field"]: d["problem"] for d in response.json()["error"]["details"]}


@pytest.mark.parametrize(
    "url",
    [
        f"/api/ml/datasets?offset={TOO_BIG}",
        f"/api/ml/models?offset={TOO_BIG}",
        f"/api/ml/models/m/versions?offset={INT64_MAX + 1}",
        f"/api/ml/models/m/history?offset={INT64_MAX + 1}",
    ],
)
async def test_an_offset_past_int64_is_422_naming_it(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 422, response.text
    assert "less than or equal to 9223372036854775807" in problems(response)["offset"]


@pytest.mark.parametrize("version", [str(INT32_MAX + 1), str(INT64_MAX + 1), TOO_BIG, "0", "-1"])
async def test_a_version_outside_its_int32_column_is_422_naming_it(
    client: httpx.AsyncClient, version: str
) -> None:
    for response in (
        await client.get(f"/api/ml/models/m/versions/{version}"),
        await client.get(f"/api/ml/models/m/versions/{version}/lineage"),
        await client.put(
            "/api/ml/models/m/aliases/champion", content=f'{{"version": {version}}}', headers=JSON
        ),
    ):
        assert response.status_code == 422, response.text
        assert "version" in problems(response)


async def test_an_in_range_version_that_does_not_exist_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/api/ml/models/m/versions/{INT32_MAX}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"version": NaN}', "version"),
        (b'{"version": Infinity}', "version"),
        (b'{"version": -Infinity}', "version"),
        (b'{"version": 1e999}', "version"),
    ],
)
async def test_a_non_finite_number_is_422_naming_its_field(
    client: httpx.AsyncClient, body: bytes, field: str
) -> None:
    response = await client.put("/api/ml/models/m/aliases/champion", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert problems(response)[field].endswith("is not a finite JSON number")


async def test_nan_deep_in_a_predict_body_is_named(client: httpx.AsyncClient) -> None:
    body = b'{"model": "m", "features": {"f0": 1, "f1": [2, NaN]}}'
    response = await client.post("/api/ml/predict", content=body, headers=JSON)
    assert response.status_code == 422
    assert problems(response) == {"features.f1.1": "NaN is not a finite JSON number"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"description": "caf\xe9"}',  # Latin-1, not UTF-8
        b"\xff\xfe{\x00}\x00",
        b"[" * 100_000 + b"]" * 100_000,  # past orjson's depth limit, and Python's recursion limit
        b'{"description": ',
    ],
    ids=["latin-1", "utf-16", "deep", "truncated"],
)
async def test_a_body_that_is_not_json_is_422_naming_the_body(client: httpx.AsyncClient, body: bytes) -> None:
    for response in (
        await client.patch("/api/ml/models/m", content=body, headers=JSON),
        await client.post("/api/ml/predict", content=body, headers=JSON),
        await client.post("/api/admin/api-keys", content=body, headers=JSON),
    ):
        assert response.status_code == 422, response.text
        assert "body" in problems(response)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"]
)
async def test_a_json_route_refuses_another_media_type_with_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    request = client.build_request(
        "PATCH", "/api/ml/models/m", content=b'{"description": "x"}', headers=headers
    )
    assert request.headers.get("Content-Type") == content_type
    response = await client.send(request)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "Content-Type" in problems(response)


async def test_a_json_body_without_a_content_type_is_read_as_json(client: httpx.AsyncClient) -> None:
    request = client.build_request("PATCH", "/api/ml/models/m", content=b'{"description": "x"}')
    assert "Content-Type" not in request.headers
    response = await client.send(request)
    assert response.status_code == 404 and "no model named" in response.json()["error"]["message"]


async def test_a_json_route_takes_json_with_a_charset_or_a_json_suffix(client: httpx.AsyncClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.patch(
            "/api/ml/models/m", content=b"{}", headers={"Content-Type": content_type}
        )
        assert response.status_code == 404, response.text  # read and validated: only the model is missing


async def test_an_upload_refuses_a_json_body_with_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/ml/datasets", json={"name": "x"})
    assert response.status_code == 415, response.text
    assert "Content-Type" in problems(response)


async def test_a_malformed_multipart_body_is_400_naming_the_body(client: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    response = await client.post("/api/ml/datasets", content=b"--xyz\r\nnot a part", headers=headers)
    assert response.status_code == 400, response.text
    assert "body" in problems(response)


async def test_v2_errors_have_the_v2_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/m/infer", content=b'{"inputs": [{"data": [NaN]}]}', headers=JSON)
    assert response.status_code == 422
    body = response.json()
    assert isinstance(body["error"], str) and body["code"] == "invalid_input"
    assert body["details"][0]["field"] == "body"
    response = await client.get("/v2/models/m/versions/1x")
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "version"


async def test_openapi_declares_every_error_with_the_error_schema(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and {"ErrorResponse", "V2ErrorResponse"} <= set(schemas)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            responses: dict[str, Any] = operation["responses"]
            expected = "V2ErrorResponse" if path.startswith("/v2") else "ErrorResponse"
            for status, response in responses.items():
                if int(status) >= 400 and not (
                    path.endswith(("/health", "/readiness", "/ready")) and status == "503"
                ):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, status)
            if "security" in operation:
                assert {"401", "403", "429", "503"} <= responses.keys(), (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= responses.keys(), (method, path)
            if any(p["in"] == "path" for p in operation.get("parameters", [])):
                assert {"404", "422"} <= responses.keys(), (method, path)


async def test_openapi_bounds_offsets_and_versions(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    parameters = {
        p["name"]: p["schema"] for p in paths["/api/ml/models/{name}/versions/{version}"]["get"]["parameters"]
    }
    assert parameters["version"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": INT32_MAX,
        "title": "Version",
    }
    offset = next(p for p in paths["/api/ml/datasets"]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["maximum"] == INT64_MAX and offset["schema"]["minimum"] == 0
    # The unversioned V2 routes take no `?version=` (one function under both paths used to offer it).
    assert "parameters" not in paths["/v2/models/{model}"]["get"] or all(
        p["name"] != "version" for p in paths["/v2/models/{model}"]["get"]["parameters"]
    )


async def test_the_v2_version_is_read_from_the_path_only(make_app: AppFactory) -> None:
    client, _ = await make_app()
    response = await client.get("/v2/models/m?version=abc")
    assert response.status_code == 404  # `version` is not a parameter here: no 422 for it


@pytest.mark.postgres
async def test_nul_in_text_is_422_naming_the_field_on_postgresql(
    postgres_url: str, make_app: AppFactory
) -> None:
    await migrate(postgres_url)
    client, _ = await make_app(database={"url": postgres_url})
    for url, field in [
        ("/api/ml/datasets/a%00b", "dataset_id"),
        ("/api/ml/datasets?name=%00", "name"),
        ("/api/ml/models?prefix=%00", "prefix"),
        ("/api/ml/predictions?model=%00", "model"),
        ("/api/admin/api-keys/%00", "key_id"),
    ]:
        response = await client.get(url)
        assert response.status_code == 422, (url, response.text)
        assert "NUL" in problems(response)[field]
    response = await client.patch("/api/ml/models/m", json={"description": "a\x00b", "tags": {"k": "\x00"}})
    assert response.status_code == 422
    assert {"description", "tags.k"} <= problems(response).keys()
    big = await client.get(f"/api/ml/models/m/versions/{INT32_MAX}")
    assert big.status_code == 404  # the largest version an INTEGER column holds reaches the database


async def test_an_api_key_expiry_is_stored_in_utc_and_bounded(client: httpx.AsyncClient) -> None:
    key = {"name": "k", "role": "viewer", "owner": "o"}
    later = await client.post("/api/admin/api-keys", json={**key, "expires_at": "2999-01-01T01:00:00+01:00"})
    assert later.status_code == 201 and later.json()["expires_at"] == "2999-01-01T00:00:00Z"
    past_max = await client.post(
        "/api/admin/api-keys", json={**key, "expires_at": "9999-12-31T23:59:59-23:59"}
    )
    assert past_max.status_code == 422 and "out of range" in problems(past_max)["expires_at"]


async def test_a_request_id_that_the_log_cannot_store_is_422(client: httpx.AsyncClient) -> None:
    # Stored in a VARCHAR(128) column; a NUL (PostgreSQL) or a longer one failed the write of the whole block.
    batch = {"model": "m", "instances": [[1, 2, 3, 4]], "request_id": "a\x00b"}
    response = await client.post("/api/ml/predict/batch", json=batch)
    assert response.status_code == 422 and "NUL" in problems(response)["request_id"]
    infer = {
        "id": "x" * 129,
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1] * 4}],
    }
    response = await client.post("/v2/models/m/infer", json=infer)
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "id"


async def test_a_single_prediction_request_id_with_nul_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/ml/predict", json={"model": "m", "features": [1], "request_id": "\x00"}
    )
    assert response.status_code == 422
