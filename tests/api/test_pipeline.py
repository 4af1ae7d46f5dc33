"""Every route the app serves passes every step of the request pipeline: a route that skips one fails here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Route

from mlplatform.app import create_app
from mlplatform.platform import Platform
from tests.api.conftest import ADMIN_KEY, AppFactory, settings_for

BODY_LIMIT = 1024
UPLOAD_LIMIT = 4096
# The operations anyone may call: health for probes and load balancers, the API's own description.
PUBLIC = {
    ("GET", "/actuator/health"),
    ("GET", "/actuator/health/liveness"),
    ("GET", "/actuator/health/readiness"),
    ("GET", "/actuator/health/{component}"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    # the web console's sign-in page and its static files; its other pages want a session (not a key)
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("GET", "/ui/static/{path:path}"),
}
UPLOADS = {
    ("POST", "/api/ml/models/{name}/versions"),
    ("POST", "/api/ml/datasets"),
    ("POST", "/ui/upload/model"),  # the console's upload forms
    ("POST", "/ui/upload/dataset"),
}


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, HEAD aside, included routers too."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, Route):
                found.update((method, route.path) for method in route.methods or () if method != "HEAD")
            nested = getattr(getattr(route, "original_router", None), "routes", None)
            if nested:
                walk(nested)

    walk(app.routes)
    return sorted(found)


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", template)


def console(template: str) -> bool:
    """The web console's pages: HTML (their errors too), behind a sign-in session."""
    return template == "/ui" or template.startswith("/ui/")


def sent_to_sign_in(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/ui/login")


def assert_error_shape(response: httpx.Response, where: Any) -> None:
    if console(response.request.url.path) and response.headers["content-type"].startswith("text/html"):
        return  # an error page; refusals before the route (413, 503) are JSON as everywhere
    body = response.json()
    if response.request.url.path.startswith("/v2/"):  # the Open Inference Protocol's own shape
        assert isinstance(body["error"], str) and body["code"], where
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, where


def request_counts(platform: Platform) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for metric in platform.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "http_server_requests_seconds_count":
                key = (sample.labels["method"], sample.labels["route"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


@pytest.fixture
async def served(
    make_app: AppFactory, tmp_path: Path
) -> tuple[httpx.AsyncClient, Platform, list[tuple[str, str]]]:
    client, platform = await make_app(
        key=None,
        server={"max-body-size": BODY_LIMIT, "compression": {"enabled": True, "min-response-size": 1}},
        security={
            "limits": {"max-upload-size": UPLOAD_LIMIT},
            "rate-limit": {"default": "100000/minute", "failed-auth": "100000/minute"},
        },
    )
    ops = operations(create_app(settings_for(tmp_path)))  # the same routes, built again
    for seen in (("POST", "/api/ml/predict"), ("POST", "/v2/models/{model}/versions/{version}/infer")):
        assert seen in ops
    return client, platform, ops


async def test_every_route_carries_a_request_id_is_compressed_and_timed(
    served: tuple[httpx.AsyncClient, Platform, list[tuple[str, str]]],
) -> None:
    client, platform, ops = served
    headers = {"X-Request-ID": "walk-1", "Accept-Encoding": "gzip", "X-API-Key": ADMIN_KEY}
    for method, template in ops:
        response = await client.request(method, concrete(template), headers=headers, content=b"{}")
        where = (method, template, response.status_code)
        assert response.headers.get("x-request-id") == "walk-1", where
        assert response.headers.get("content-encoding") == "gzip", where
        assert "connection" not in response.headers, where
        if response.status_code >= 400:
            assert_error_shape(response, where)
    counts = request_counts(platform)
    missing = [(m, t) for m, t in ops if counts.get((m, t), 0) < 1]
    assert not missing, f"not timed in http_server_requests_seconds: {missing}"


async def test_every_route_asks_keep_alive_clients_to_leave_while_draining(
    served: tuple[httpx.AsyncClient, Platform, list[tuple[str, str]]],
) -> None:
    client, platform, ops = served
    platform.lifecycle.draining = True
    for method, template in ops:
        response = await client.request(method, concrete(template), content=b"{}")
        assert response.headers.get("connection") == "close", (method, template)
    ready = await client.get("/actuator/health/readiness")
    assert ready.status_code == 503


async def test_every_route_but_the_public_ones_wants_a_key(
    served: tuple[httpx.AsyncClient, Platform, list[tuple[str, str]]],
) -> None:
    client, _, ops = served
    public = set()
    for method, template in ops:
        # A body that is not even JSON: the key is checked before the body is read or parsed.
        response = await client.request(method, concrete(template), content=b"\xff not json")
        if console(template) and sent_to_sign_in(response):
            assert response.headers["x-request-id"]
        elif response.status_code == 401:
            assert_error_shape(response, (method, template))
            assert response.headers["x-request-id"]
        else:
            public.add((method, template))
    assert public == PUBLIC & set(ops), "operations answered without an API key"


async def test_every_route_refuses_a_body_over_its_limit(
    served: tuple[httpx.AsyncClient, Platform, list[tuple[str, str]]],
) -> None:
    client, _, ops = served
    for method, template in ops:
        limit = UPLOAD_LIMIT if (method, template) in UPLOADS else BODY_LIMIT
        for key in (None, ADMIN_KEY):
            headers = {"X-API-Key": key} if key else {}
            over = b"x" * (limit + 1)
            response = await client.request(method, concrete(template), content=over, headers=headers)
            assert response.status_code == 413, (method, template, response.status_code)
            assert_error_shape(response, (method, template))
            assert response.headers["x-request-id"]
            within = await client.request(method, concrete(template), content=b"x" * limit, headers=headers)
            assert within.status_code != 413, (method, template)


async def test_every_guarded_route_answers_with_rate_limit_headers(
    served: tuple[httpx.AsyncClient, Platform, list[tuple[str, str]]],
) -> None:
    client, _, ops = served
    for method, template in ops:
        if (method, template) in PUBLIC or console(template):  # console pages: by the session's key (test_ui)
            continue
        response = await client.request(
            method, concrete(template), content=b"{}", headers={"X-API-Key": ADMIN_KEY}
        )
        assert response.headers.get("x-ratelimit-limit") == "100000", (method, template, response.status_code)
        again = await client.request(
            method, concrete(template), content=b"{}", headers={"X-API-Key": ADMIN_KEY}
        )
        used = int(response.headers["x-ratelimit-remaining"]) - int(again.headers["x-ratelimit-remaining"])
        assert used == 1, f"{method} {template}: one request counted {used} times against the key's limit"
