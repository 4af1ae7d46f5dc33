"""The HTTP edge: the FastAPI app with the request pipeline (`api.pipeline`) run around every route.

Every HTTP request passes the same steps here, in one place, so a step added later reaches every route.
Predictions (`POST /api/ml/predict`, `/api/ml/predict/batch` and the Open Inference Protocol's
`/v2/models/{model}[/versions/{version}]/infer`) then skip FastAPI's routing, dependency resolution and
`Request`/`Response` objects, which cost more than a prediction; every other request goes to its route. The
predict routes in FastAPI still document these operations (OpenAPI, /docs) and run the same handlers.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from mlplatform import errors
from mlplatform.api.inference_v2 import serve_infer
from mlplatform.api.pipeline import (
    AccessLog,
    RawHeaders,
    RequestHeaders,
    authorize,
    begin_request,
    body_limit,
    check_declared_length,
    check_encoding,
    check_media_type,
    check_started,
    client_address,
    compress,
    error_parts,
    error_reply,
    inflate,
    inflated_headers,
    read_body,
    response_headers,
    should_compress,
    text,
    too_large,
)
from mlplatform.api.predict import serve_batch, serve_predict
from mlplatform.api.responses import JsonResponse, Reply, dumps
from mlplatform.auth.schemas import Permission
from mlplatform.platform import Platform

# A handler gets the body, the platform, the headers and the path's parameters; it returns plain data (sent
# as JSON) or a `Reply`.
Handler = Callable[[bytes, Platform, RequestHeaders, dict[str, str]], Awaitable[Any]]


async def _predict(body: bytes, platform: Platform, headers: RequestHeaders, _: dict[str, str]) -> Any:
    return await serve_predict(body, platform, headers.get)


async def _batch(body: bytes, platform: Platform, headers: RequestHeaders, _: dict[str, str]) -> Any:
    return await serve_batch(body, platform, headers.get)


async def _infer(body: bytes, platform: Platform, headers: RequestHeaders, params: dict[str, str]) -> Any:
    return await serve_infer(
        body, text(headers.infer_length), platform, params["model"], params.get("version"), headers.get
    )


JSON = ("application/json",)
INFER_TYPES = ("application/json", "application/octet-stream")  # JSON, or the binary tensor extension
# path → (the route template `http_server_requests_seconds` labels it with, as for routed requests; handler;
# the media types its body may have)
FastRoute = tuple[str, Handler, tuple[str, ...]]
ROUTES: dict[str, FastRoute] = {
    "/api/ml/predict": ("/api/ml/predict", _predict, JSON),
    "/api/ml/predict/batch": ("/api/ml/predict/batch", _batch, JSON),
}
V2_INFER = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
V2_ROUTES: dict[bool, FastRoute] = {  # by whether the path names a version
    False: ("/v2/models/{model}/infer", _infer, INFER_TYPES),
    True: ("/v2/models/{model}/versions/{version}/infer", _infer, INFER_TYPES),
}


class _Exchange:
    """One request's progress through the pipeline."""

    __slots__ = ("headers", "rate", "refused", "request_id", "started", "status")

    def __init__(self, headers: RequestHeaders, request_id: str) -> None:
        self.headers = headers
        self.request_id = request_id
        self.rate: RawHeaders = []
        self.status = 500
        self.started = self.refused = False


class EdgeApp(FastAPI):
    """The FastAPI app, behind the request pipeline; predictions answered without its routing."""

    platform: Platform
    access: AccessLog
    templates: dict[Any, str] | None = None  # path templates of Starlette's own routes, by endpoint

    def serve(self, platform: Platform) -> None:
        self.platform = platform
        self.access = AccessLog(platform.metrics)
        for kind in (errors.DomainError, RequestValidationError, StarletteHTTPException, Exception):
            self.add_exception_handler(kind, _routed_error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        began = time.perf_counter()
        headers = RequestHeaders(scope["headers"])
        exchange = _Exchange(headers, begin_request(headers.request_id))
        path: str = scope["path"]
        found, params = self._fast_route(scope["method"], path)
        try:
            check_started(self.platform, path)
            limit, setting = body_limit(self.platform.settings, scope["method"], path)
            check_declared_length(headers, limit, setting)
            check_encoding(headers)
            if found is not None:
                await self._fast(scope, receive, send, exchange, found, params, limit, setting)
            else:
                await self._routed(scope, receive, send, exchange, limit, setting)
        except Exception as exc:  # a step refused the request, or a fast handler failed
            if exchange.started:
                return  # answered already (a route's 500 is logged and sent by its handler)
            status, content, more = error_parts(exc, path, exchange.request_id)
            exchange.rate += more
            await self._answer(send, exchange, status, content, b"application/json")
        finally:
            route = found[0] if found is not None else self._template(scope)
            self.access.record(scope["method"], route, exchange.status, time.perf_counter() - began)

    def _template(self, scope: Scope) -> str:
        """The matched route's path template: FastAPI's routes leave themselves in the scope, Starlette's own
        (/docs, /openapi.json) only their endpoint."""
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "UNMATCHED"
        if self.templates is None:
            self.templates = {r.endpoint: r.path for r in self.routes if isinstance(r, Route)}
        return self.templates.get(endpoint, "UNMATCHED")

    @staticmethod
    def _fast_route(method: str, path: str) -> tuple[FastRoute | None, dict[str, str]]:
        if method != "POST":
            return None, {}
        found = ROUTES.get(path)
        if found is None and path.startswith("/v2/models/") and (match := V2_INFER.fullmatch(path)):
            return V2_ROUTES[match["version"] is not None], match.groupdict()
        return found, {}

    async def _fast(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: _Exchange,
        route: FastRoute,
        params: dict[str, str],
        limit: int,
        setting: str,
    ) -> None:
        platform = self.platform
        headers = exchange.headers
        _, handler, media_types = route
        # The key before the body: an unauthenticated caller costs no read, no parse and no model.
        _, exchange.rate = await authorize(platform, headers, client_address(scope), Permission.PREDICT)
        check_media_type(headers, media_types)
        body = await read_body(receive, limit, setting)
        if body is None:
            return  # the client went away
        if headers.encoded:
            body = inflate(body, headers.encoding, platform.settings.security.limits.max_decompressed_size)
        result = await handler(body, platform, headers, params)
        if isinstance(result, Reply):
            exchange.rate += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
            await self._answer(send, exchange, 200, result.body, result.media_type.encode())
        else:
            await self._answer(send, exchange, 200, dumps(result), b"application/json")

    async def _answer(
        self, send: Send, exchange: _Exchange, status: int, content: bytes, media_type: bytes
    ) -> None:
        extra = response_headers(exchange.request_id, exchange.rate, self.platform.lifecycle.draining)
        compression = self.platform.settings.server.compression
        if should_compress(compression, exchange.headers.gzip, len(content), extra):
            content, encoded = compress(content)
            extra += encoded
        exchange.status, exchange.started = status, True
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", media_type),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _routed(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange, limit: int, setting: str
    ) -> None:
        headers = exchange.headers
        # A fresh state per request: servers may hand every request the same lifespan-state dict.
        state = scope["state"] = {
            **scope.get("state", {}),
            "request_id": exchange.request_id,
            "headers": headers,
        }
        if headers.encoded:
            body = await read_body(receive, limit, setting)
            if body is None:
                return
            body = inflate(
                body, headers.encoding, self.platform.settings.security.limits.max_decompressed_size
            )
            # The same scope, not a copy: the router records the matched route in it for the access metric.
            scope["headers"] = inflated_headers(scope["headers"], len(body))
            receive = _replay(body, receive)
        else:
            receive = self._counting(receive, send, scope, exchange, limit, setting)
        compression = self.platform.settings.server.compression
        held: Message | None = None

        async def finishing_send(message: Message) -> None:
            nonlocal held
            if exchange.refused:
                return  # the 413 has been sent; whatever the route answers after it is dropped
            if message["type"] == "http.response.start":
                exchange.status, exchange.started = message["status"], True
                rate = state.get("rate_headers", exchange.rate)
                extra = response_headers(exchange.request_id, rate, self.platform.lifecycle.draining)
                message["headers"] = [*message.get("headers", []), *extra]
                if compression.enabled and headers.gzip:
                    held = message  # until the body shows whether it is worth compressing
                    return
            elif held is not None:
                start, held = held, None
                body = message.get("body", b"")
                if not message.get("more_body", False) and should_compress(
                    compression, True, len(body), start["headers"]
                ):
                    body, encoded = compress(body)
                    kept = [(k, v) for k, v in start["headers"] if k != b"content-length"]
                    start["headers"] = [*kept, (b"content-length", str(len(body)).encode()), *encoded]
                    message = {**message, "body": body}
                await send(start)
            await send(message)

        with contextlib.suppress(_RefusedError):
            await super().__call__(scope, receive, finishing_send)

    def _counting(
        self, receive: Receive, send: Send, scope: Scope, exchange: _Exchange, limit: int, setting: str
    ) -> Receive:
        """`receive` that answers 413 once the body streams past the limit, then stops the route."""
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not exchange.started:
                        status, content, _ = error_parts(too_large(limit, setting), scope["path"], None)
                        await self._answer(send, exchange, status, content, b"application/json")
                        exchange.refused = True
                    # Frameworks turn errors while reading into their own 400: answer first, then stop it.
                    raise _RefusedError
            return message

        return counting_receive


class _RefusedError(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _routed_error(request: Request, exc: Exception) -> JsonResponse:
    return error_reply(exc, request.url.path, request.scope.get("state", {}).get("request_id"))
