"""The predict and infer routes answered straight from ASGI, ahead of FastAPI's middleware stack and routing.

Measured in-process on one XGBoost model (a unique row per request), the generic stack cost more than the
prediction: Starlette's error and telemetry layers, three pure-ASGI middlewares, routing and dependency
resolution, and a `Request`/`Response` pair per call. Here one function does, for the common case, what
those layers do: request id and access metric (`RequestContextMiddleware`), the body limit, the API-key
guard, the error bodies, response gzip. Anything uncommon (a compressed or chunked body, one without or
over its Content-Length) goes down the full stack to the FastAPI routes, which run the same handlers; those
routes also document the API (OpenAPI, /docs). Served here: `POST /api/ml/predict`, `/api/ml/predict/batch`
and the Open Inference Protocol's `POST /v2/models/{model}[/versions/{version}]/infer`.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.types import Message, Receive, Scope, Send

from mlplatform.api.deps import presented_key
from mlplatform.api.errors import domain_response, error_response, validation_response
from mlplatform.api.inference_v2 import serve_infer
from mlplatform.api.middleware import begin_request
from mlplatform.api.responses import Reply, dumps
from mlplatform.auth.schemas import Permission
from mlplatform.errors import DomainError
from mlplatform.platform import Platform
from mlplatform.serving.router import serve_batch, serve_predict

log = structlog.get_logger(__name__)


class _Headers:
    """The request headers the fast path reads, in one pass over the list."""

    __slots__ = ("api_key", "authorization", "encoded", "gzip", "infer_length", "length", "request_id")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.length = self.request_id = self.api_key = self.authorization = self.infer_length = None
        self.encoded = self.gzip = False
        for name, value in raw:
            if name == b"content-length":
                self.length = value
            elif name == b"x-api-key":
                self.api_key = value
            elif name == b"authorization":
                self.authorization = value
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"content-encoding":
                self.encoded = value.strip().lower() not in (b"", b"identity")
            elif name == b"accept-encoding":
                self.gzip = b"gzip" in value
            elif name == b"inference-header-content-length":
                self.infer_length = value

    def key(self) -> str | None:
        return presented_key(_text(self.api_key), _text(self.authorization))


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


# A handler gets the body, the platform, the headers and the path's parameters; it returns plain data (sent
# as JSON) or a `Reply`.
Handler = Callable[[bytes, Platform, _Headers, dict[str, str]], Awaitable[Any]]


async def _predict(body: bytes, platform: Platform, _: _Headers, __: dict[str, str]) -> Any:
    return await serve_predict(body, platform)


async def _batch(body: bytes, platform: Platform, _: _Headers, __: dict[str, str]) -> Any:
    return await serve_batch(body, platform)


async def _infer(body: bytes, platform: Platform, headers: _Headers, params: dict[str, str]) -> Any:
    return await serve_infer(
        body, _text(headers.infer_length), platform, params["model"], params.get("version")
    )


# path → (the route template `http_server_requests_seconds` labels it with, as for routed requests; handler)
ROUTES: dict[str, tuple[str, Handler]] = {
    "/api/ml/predict": ("/api/ml/predict", _predict),
    "/api/ml/predict/batch": ("/api/ml/predict/batch", _batch),
}
V2_INFER = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
V2_ROUTES: dict[bool, tuple[str, Handler]] = {  # by whether the path names a version
    False: ("/v2/models/{model}/infer", _infer),
    True: ("/v2/models/{model}/versions/{version}/infer", _infer),
}


class FastPathApp(FastAPI):
    """The FastAPI app, with the predict and infer routes (`ROUTES`, `V2_INFER`) answered before its stack."""

    platform: Platform
    timers: dict[tuple[str, int], Any]  # `http_server_requests_seconds` children by (route, status)

    def serve_predictions(self, platform: Platform) -> None:
        self.platform = platform
        self.timers = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            found, params = ROUTES.get(path), {}
            if found is None and path.startswith("/v2/models/") and (match := V2_INFER.fullmatch(path)):
                found, params = V2_ROUTES[match["version"] is not None], match.groupdict()
            if found is not None:
                headers = _Headers(scope["headers"])
                limit = self.platform.settings.server.max_body_size
                length = headers.length
                if length is not None and not headers.encoded and length.isdigit() and int(length) <= limit:
                    await self._serve(scope, receive, send, found, headers, params)
                    return
        await super().__call__(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        found: tuple[str, Handler],
        headers: _Headers,
        params: dict[str, str],
    ) -> None:
        started = time.perf_counter()
        route, handler = found
        platform = self.platform
        request_id = begin_request(headers.request_id)
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]
        status, media_type = 500, b"application/json"
        try:
            body = await _read(receive)
            if body is None:
                return  # the client went away
            try:
                client = scope["client"][0] if scope.get("client") else "unknown"
                _, decision = await platform.auth.guard(headers.key(), client, Permission.PREDICT)
                if decision is not None:
                    extra += decision.headers()
                result = await handler(body, platform, headers, params)
                if isinstance(result, Reply):
                    status, content, media_type = 200, result.body, result.media_type.encode()
                    extra += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
                else:
                    status, content = 200, dumps(result)
            except DomainError as exc:
                status, content, more = _rendered(domain_response(exc, route))
                extra += more
            except RequestValidationError as exc:
                status, content, _ = _rendered(validation_response(exc.errors(), route))
            except Exception:
                log.exception("unhandled error", path=route)
                status, content, _ = _rendered(
                    error_response(
                        500,
                        "internal_error",
                        "internal error; the request id finds it in the logs",
                        {"request_id": request_id},
                    )
                )
            compression = platform.settings.server.compression
            if compression.enabled and headers.gzip and len(content) >= compression.min_response_size:
                content = gzip.compress(content, compresslevel=6)
                extra += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            response_headers = [
                (b"content-length", str(len(content)).encode()),
                (b"content-type", media_type),
                *extra,
            ]
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": content})
        finally:
            timer = self.timers.get((route, status))
            if timer is None:
                timer = self.timers[(route, status)] = platform.metrics.http_requests.labels(
                    "POST", route, str(status)
                )
            timer.observe(time.perf_counter() - started)


async def _read(receive: Receive) -> bytes | None:
    """The whole body (its size is already known to be within the limit), or None on a disconnect."""
    message: Message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _rendered(response: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, body and the headers worth keeping (Retry-After, rate limits) of an error `JsonResponse`."""
    keep = [(k, v) for k, v in response.raw_headers if k not in (b"content-length", b"content-type")]
    return response.status_code, bytes(response.body), keep
