"""Pure-ASGI middleware: request id + access metrics, and the request body size limit."""

from __future__ import annotations

import contextlib
import re
import time
import zlib
from typing import Any

import structlog
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlplatform.api.errors import error_response
from mlplatform.ids import new_id
from mlplatform.metrics import Metrics

GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def begin_request(supplied: bytes | None) -> str:
    """The request's id (the client's `X-Request-ID` when well formed, else a new one), bound to every log
    line written while the request runs."""
    candidate = supplied.decode("latin-1") if supplied else ""
    request_id = candidate if GOOD_REQUEST_ID.fullmatch(candidate) else new_id()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


class RequestContextMiddleware:
    """Gives every request an id (kept from `X-Request-ID` when well formed), binds it to every log line,
    returns it as `X-Request-ID`, and times the request per route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        request_id = begin_request(supplied)
        # A fresh state per request: servers may hand every request the same lifespan-state dict.
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Rate-limit headers are left in the request state by the auth dependency.
                extra = scope["state"].get("rate_headers", ())
                message["headers"] = [*message.get("headers", []), header, *extra]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "UNMATCHED"
            self.metrics.http_requests.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


class _BodyTooLargeError(Exception):
    pass


# Uploads of model artifacts and datasets may be far larger than any other request.
UPLOAD_PATHS = re.compile(r"^/api/ml/(models/[^/]+/versions|datasets)/?$")


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413: by Content-Length up front, else while streaming. Uploads
    (`UPLOAD_PATHS`) have `upload_limit` (security.limits.max-upload-size), everything else `limit`."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.default_limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and UPLOAD_PATHS.match(scope["path"])
        limit = self.upload_limit if upload else self.default_limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await self._refuse(scope, receive, send, limit)
                    return
                break
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not refused:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send, limit)
                    # Frameworks turn errors while reading into their own 400: answer first, then stop it.
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; whatever the app answers after it is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLargeError):
            await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        setting = "security.limits.max-upload-size" if limit == self.upload_limit else "server.max-body-size"
        response = error_response(
            413,
            "payload_too_large",
            f"request body is larger than {setting} ({limit} bytes)",
            {"field": "body", "limit_bytes": limit},
        )
        await response(scope, receive, send)


class RequestDecompressionMiddleware:
    """Inflates `Content-Encoding: gzip`/`deflate` request bodies; any that inflates past `limit` is 413,
    so a small compressed bomb cannot take the memory of the instance."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        encoding = b""
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-encoding":
                    encoding = value.strip().lower()
                    break
        if encoding in (b"", b"identity"):
            await self.app(scope, receive, send)
            return
        if encoding not in (b"gzip", b"deflate"):
            await error_response(
                415,
                "unsupported_media_type",
                f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; use gzip or deflate",
                {"field": "Content-Encoding"},
            )(scope, receive, send)
            return
        inflater = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15)
        parts: list[bytes] = []
        size = 0
        more = True
        try:
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return
                more = message.get("more_body", False)
                chunk = inflater.decompress(message.get("body", b""), self.limit + 1 - size)
                size += len(chunk)
                parts.append(chunk)
                if size > self.limit or inflater.unconsumed_tail:
                    await self._too_large(scope, receive, send)
                    return
            parts.append(inflater.flush())
        except zlib.error as exc:
            await error_response(
                400,
                "bad_request",
                f"request body is not valid {encoding.decode()} data: {exc}",
                {"field": "body"},
            )(scope, receive, send)
            return
        body = b"".join(parts)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
        # The same scope, not a copy: the router records the matched route in it, and the access metric
        # (`RequestContextMiddleware`, outside) reads it from there.
        scope["headers"] = [*headers, (b"content-length", str(len(body)).encode())]
        delivered = False

        async def inflated_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, inflated_receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(
            413,
            "payload_too_large",
            f"request body inflates past security.limits.max-decompressed-size ({self.limit} bytes)",
            {"field": "body", "limit_bytes": self.limit},
        )(scope, receive, send)


def add_middleware(
    app: Any,
    *,
    metrics: Metrics,
    max_body_size: int,
    max_upload_size: int,
    max_inflated_size: int,
    gzip_min_size: int | None,
) -> None:
    """Install in order, outermost first: request context, body limit, request inflation, response gzip.
    (`api.fastpath` answers the common predict requests before any of them.)"""
    if gzip_min_size is not None:
        app.add_middleware(GZipMiddleware, minimum_size=gzip_min_size)
    app.add_middleware(RequestDecompressionMiddleware, limit=max_inflated_size)
    app.add_middleware(BodyLimitMiddleware, limit=max_body_size, upload_limit=max_upload_size)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
