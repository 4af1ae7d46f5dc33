"""API keys, roles, rate limits and input limits, through the HTTP API."""

from __future__ import annotations

import asyncio
import gzip
import io
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from mlplatform.auth.keys import generate_key
from mlplatform.logging import configure_logging
from mlplatform.settings import LoggingSettings
from tests.api.conftest import ADMIN_KEY, AppFactory
from tests.api.models import reference

ROLES = ("admin", "editor", "predictor", "viewer")
READERS = set(ROLES)
PREDICTORS = {"admin", "editor", "predictor"}
EDITORS = {"admin", "editor"}
ROW = [0.1, 0.2, 0.3, 0.4]

# Every endpoint group that exists, one request each, and the roles that may call it ("m" is registered,
# `{dataset}` is an uploaded dataset's id).
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
    ("GET", "/api/ml/models", None, READERS),
    ("GET", "/api/ml/models/m", None, READERS),
    ("GET", "/api/ml/models/m/versions/1", None, READERS),
    ("GET", "/api/ml/models/m/versions/1/lineage", None, READERS),
    ("GET", "/api/ml/models/m/history", None, READERS),
    ("GET", "/api/ml/models/m/versions/1/artifact", None, READERS),
    ("PATCH", "/api/ml/models/m", {"description": "d"}, EDITORS),
    ("PATCH", "/api/ml/models/m/versions/1", {"description": "d"}, EDITORS),
    ("POST", "/api/ml/models/m/versions/1/stage", {"stage": "staging"}, EDITORS),
    ("PUT", "/api/ml/models/m/aliases/champion", {"version": 1}, EDITORS),
    ("POST", "/api/ml/predict", {"model": "m", "features": ROW}, PREDICTORS),
    ("POST", "/api/ml/predict/batch", {"model": "m", "instances": [ROW]}, PREDICTORS),
    ("GET", "/api/ml/predictions", None, READERS),
    ("GET", "/api/ml/datasets", None, READERS),
    ("GET", "/api/ml/datasets/{dataset}", None, READERS),
    ("GET", "/api/ml/datasets/{dataset}/data", None, READERS),
    ("GET", "/v2", None, READERS),
    ("GET", "/v2/models/m", None, READERS),
    ("GET", "/v2/models/m/ready", None, READERS),
    (
        "POST",
        "/v2/models/m/infer",
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]},
        PREDICTORS,
    ),
    ("GET", "/api/admin/api-keys", None, {"admin"}),
    ("POST", "/api/admin/api-keys", {"name": "matrix", "role": "viewer", "owner": "matrix"}, {"admin"}),
    ("GET", "/actuator/info", None, set(ROLES)),
    ("GET", "/actuator/prometheus", None, set(ROLES)),
    ("GET", "/actuator/metrics", None, set(ROLES)),
    ("GET", "/actuator/metrics/ml_system_memory_used_mb", None, set(ROLES)),
]
PUBLIC = [
    "/actuator/health",
    "/actuator/health/liveness",
    "/actuator/health/readiness",
    "/v2/health/live",
    "/v2/health/ready",
]


async def create_key(client: httpx.AsyncClient, role: str, **extra: Any) -> dict[str, Any]:
    body = {"name": f"{role} key", "role": role, "owner": "tester", **extra}
    response = await client.post("/api/admin/api-keys", json=body, headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def call(client: httpx.AsyncClient, method: str, path: str, key: str | None, body: Any = None) -> int:
    headers = {"X-API-Key": key} if key else {}
    response = await client.request(method, path, json=body, headers=headers)
    if response.status_code >= 400:
        body = response.json()
        v2 = {"error", "code", "details"}  # the Open Inference Protocol's shape under /v2/
        assert (
            set(body) == v2
            if path.startswith("/v2/")
            else set(body["error"]) == {"code", "message", "details"}
        )
    return response.status_code


async def test_role_matrix(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(key=None)
    ref = reference("sklearn-forest-skops", tmp_path)
    admin = httpx.Headers({"X-API-Key": ADMIN_KEY})
    files = {"file": ("m.skops", ref.path.read_bytes())}
    created = await client.post(
        "/api/ml/models/m/versions", files=files, data={"metadata": "{}"}, headers=admin
    )
    assert created.status_code == 201
    table = {"file": ("d.csv", b"a,b\n1,2\n")}
    dataset = await client.post("/api/ml/datasets", files=table, data={"name": "d"}, headers=admin)
    assert dataset.status_code == 201
    keys = {role: (await create_key(client, role))["key"] for role in ROLES}
    for role in ROLES:  # registering is editing
        upload = await client.post(
            "/api/ml/models/m/versions", files=files, headers={"X-API-Key": keys[role]}
        )
        assert upload.status_code == (201 if role in EDITORS else 403), role
        deleting = await client.delete("/api/ml/models/nothing", headers={"X-API-Key": keys[role]})
        assert deleting.status_code == (404 if role in EDITORS else 403), role
    for role in ROLES:  # so are uploading and deleting datasets
        headers = {"X-API-Key": keys[role]}
        upload = await client.post("/api/ml/datasets", files=table, data={"name": role}, headers=headers)
        assert upload.status_code == (201 if role in EDITORS else 403), role
        own = upload.json()["id"] if role in EDITORS else dataset.json()["id"]
        deleting = await client.delete(f"/api/ml/datasets/{own}", headers=headers)
        assert deleting.status_code == (204 if role in EDITORS else 403), role
    anonymous = await client.post("/api/ml/datasets", files=table, data={"name": "anonymous"})
    assert anonymous.status_code == 401
    for method, template, body, allowed in ENDPOINTS:
        path = template.format(dataset=dataset.json()["id"])
        for role in ROLES:
            status = await call(client, method, path, keys[role], body)
            expected = {200, 201} if role in allowed else {403}
            assert status in expected, (method, path, role, status)
        assert await call(client, method, path, None, body) == 401, (method, path)
    for path in PUBLIC:
        assert await call(client, "GET", path, None) == 200


async def test_every_api_operation_requires_a_key_in_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, methods in spec["paths"].items()
        if path.startswith(("/api", "/v2")) and not path.startswith("/v2/health")  # probes are public
        for method, operation in methods.items()
    ]
    assert operations
    unguarded = [(path, method) for path, method, op in operations if not op.get("security")]
    assert unguarded == []
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])


async def test_bearer_header_works_too(make_app: AppFactory) -> None:
    client, _ = await make_app(key=None)
    response = await client.get("/api/admin/api-keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200


async def test_wrong_key_of_the_right_length_is_401(make_app: AppFactory) -> None:
    client, _ = await make_app(key=None)
    response = await client.get("/actuator/info", headers={"X-API-Key": generate_key()})
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "unauthorized", "message": "invalid API key", "details": None}


async def test_revoked_key_is_refused_at_once(make_app: AppFactory) -> None:
    client, _ = await make_app()
    created = await create_key(client, "viewer")
    assert await call(client, "GET", "/actuator/info", created["key"]) == 200
    revoked = await client.delete(f"/api/admin/api-keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    response = await client.get("/actuator/info", headers={"X-API-Key": created["key"]})
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


async def test_expired_key_is_refused(make_app: AppFactory) -> None:
    client, _ = await make_app()
    expires = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    created = await create_key(client, "viewer", expires_at=expires)
    assert await call(client, "GET", "/actuator/info", created["key"]) == 200
    await asyncio.sleep(1.2)
    response = await client.get("/actuator/info", headers={"X-API-Key": created["key"]})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]
    past = await client.post(
        "/api/admin/api-keys",
        json={"name": "old", "role": "viewer", "owner": "t", "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert past.status_code == 422
    assert past.json()["error"]["details"][0]["field"] == "expires_at"


async def test_key_listing_never_shows_keys_and_the_database_holds_only_hashes(make_app: AppFactory) -> None:
    client, platform = await make_app()
    created = await create_key(client, "editor")
    listing = (await client.get("/api/admin/api-keys")).text
    assert created["key"] not in listing
    assert created["key"][:12] in listing  # the display prefix, to recognise it
    async with platform.database.session() as session:
        dumped = repr((await session.execute(text("SELECT * FROM api_keys"))).all())
    assert created["key"] not in dumped


async def test_bad_key_requests_name_the_field(make_app: AppFactory) -> None:
    client, _ = await make_app()
    response = await client.post("/api/admin/api-keys", json={"name": "x", "role": "god", "owner": "t"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "role"
    unknown = await client.delete("/api/admin/api-keys/nope")
    assert unknown.status_code == 404


async def test_per_key_rate_limit_answers_429_with_headers(make_app: AppFactory) -> None:
    client, _ = await make_app()
    limited = await create_key(client, "viewer", rate_limit="3/minute")
    other = await create_key(client, "viewer")
    for remaining in (2, 1, 0):
        response = await client.get("/actuator/info", headers={"X-API-Key": limited["key"]})
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
    refused = await client.get("/actuator/info", headers={"X-API-Key": limited["key"]})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert (await client.get("/actuator/info", headers={"X-API-Key": other["key"]})).status_code == 200


async def test_default_rate_limit_applies_to_keys_without_their_own(make_app: AppFactory) -> None:
    client, _ = await make_app(security={"rate-limit": {"default": "2/minute"}})
    created = await create_key(client, "viewer")
    statuses = [await call(client, "GET", "/actuator/info", created["key"]) for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_failed_authentications_are_limited_per_address(make_app: AppFactory) -> None:
    client, _ = await make_app(key=None, security={"rate-limit": {"failed-auth": "3/minute"}})
    for _ in range(3):
        assert await call(client, "GET", "/actuator/info", generate_key()) == 401
    blocked = await client.get("/actuator/info", headers={"X-API-Key": generate_key()})
    assert blocked.status_code == 429
    assert "failed authentications" in blocked.json()["error"]["message"]
    assert int(blocked.headers["retry-after"]) >= 1
    assert await call(client, "GET", "/actuator/info", None) == 429  # a missing key is a failure too
    # A valid key from the same address still works: only guessing is stopped.
    assert (await client.get("/actuator/info", headers={"X-API-Key": ADMIN_KEY})).status_code == 200


async def test_gzip_bodies_are_inflated_and_bombs_refused(make_app: AppFactory) -> None:
    client, _ = await make_app(security={"limits": {"max-decompressed-size": 4096}})
    body = b'{"name": "zipped", "role": "viewer", "owner": "t"}'
    ok = await client.post(
        "/api/admin/api-keys",
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert ok.status_code == 201, ok.text
    deflated = await client.post(
        "/api/admin/api-keys",
        content=zlib.compress(body),
        headers={"Content-Encoding": "deflate", "Content-Type": "application/json"},
    )
    assert deflated.status_code == 201
    bomb = gzip.compress(b" " * 10_000_000)  # ~10 KB on the wire, 10 MB inflated
    assert len(bomb) < 20_000
    refused = await client.post(
        "/api/admin/api-keys",
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert refused.status_code == 413
    assert refused.json()["error"]["details"]["limit_bytes"] == 4096
    broken = await client.post(
        "/api/admin/api-keys", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert broken.status_code == 400
    brotli = await client.post("/api/admin/api-keys", content=b"x", headers={"Content-Encoding": "br"})
    assert brotli.status_code == 415


async def test_auth_disabled_opens_everything_with_a_warning(make_app: AppFactory) -> None:
    client, _ = await make_app(key=None, security={"api-keys": {"enabled": False}})
    assert (await client.get("/api/admin/api-keys")).status_code == 200
    assert "disabled" in (await client.get("/actuator/info")).json()["security"]["warning"]


async def test_management_public_opens_chosen_actuator_endpoints(make_app: AppFactory) -> None:
    client, _ = await make_app(key=None, management={"public": ["prometheus"]})
    assert (await client.get("/actuator/prometheus")).status_code == 200
    assert (await client.get("/actuator/info")).status_code == 401


async def test_secrets_never_reach_logs_or_responses(make_app: AppFactory, tmp_path: Any) -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json", level={"root": "DEBUG"}), stream=stream)
    try:
        client, _ = await make_app(
            database={"password": "db-secret-value"},
            cache={"password": "cache-secret-value"},
            storage={"secret-access-key": "s3-secret-value"},
        )
        created = await create_key(client, "viewer")
        responses = [
            await client.get("/actuator/info"),
            await client.get("/actuator/info", headers={"X-API-Key": created["key"]}),
            await client.get("/actuator/info", headers={"X-API-Key": "mlp_wrong-key-value"}),
            await client.get("/api/admin/api-keys"),
        ]
    finally:
        configure_logging(LoggingSettings())
    logs = stream.getvalue()
    assert "api key created" in logs  # the log was captured at all
    secrets = (ADMIN_KEY, created["key"], "db-secret-value", "cache-secret-value", "s3-secret-value")
    for secret in (*secrets, "mlp_wrong-key-value"):
        assert secret not in logs
        for response in responses:
            assert secret not in response.text


async def test_rows_and_features_per_request_are_bounded(make_app: AppFactory, tmp_path: Path) -> None:
    client, _ = await make_app(security={"limits": {"max-features": 3, "max-batch-rows": 2}})
    ref = reference("sklearn-forest-skops", tmp_path)
    await client.post(
        "/api/ml/models/m/versions",
        files={"file": ("m.skops", ref.path.read_bytes())},
        data={"metadata": "{}"},
    )
    wide = await client.post("/api/ml/predict", json={"model": "m", "features": ROW})
    assert wide.status_code == 422 and wide.json()["error"]["details"][0]["field"] == "features"
    assert "max-features" in wide.json()["error"]["message"]
    many = await client.post("/api/ml/predict/batch", json={"model": "m", "instances": [ROW[:3]] * 3})
    assert many.status_code == 422 and many.json()["error"]["details"][0]["field"] == "instances"
    v2 = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": ROW * 3}]}
    assert (await client.post("/v2/models/m/infer", json=v2)).status_code == 422
