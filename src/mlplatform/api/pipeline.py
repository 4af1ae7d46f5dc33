"""The request pipeline: every step an HTTP request goes through, as plain functions.

`api.edge.EdgeApp` runs these around every route, in this order: request id → started (503 until start-up
work is done) → body limit (declared length) → API key and rate limit → body (streamed limit, decompression) →
handler → error shape → response headers (request id, rate limits, `Connection: close` while draining) →
compression → access log and metrics.
Its fast path for predictions skips FastAPI's routing and dependency resolution, never one of these steps.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any

import structlog
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from mlplatform.api.body import is_json, refuse_media_type
from mlplatform.api.errors import HTTP_CODES, domain_response, error_response, validation_response
from mlplatform.api.responses import JsonResponse
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.errors import BadRequest, DomainError, PayloadTooLarge, Unavailable, UnsupportedMediaType
from mlplatform.ids import new_id
from mlplatform.metrics import Metrics
from mlplatform.platform import Platform
from mlplatform.settings import CompressionSettings, Settings

log = structlog.get_logger(__name__)
ACCESS_LOGGER = "mlplatform.access"
access_log = structlog.get_logger(ACCESS_LOGGER)

RawHeaders = list[tuple[bytes, bytes]]
GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Uploads of model artifacts and datasets may be far larger than any other request.
# The API's uploads and the console's upload forms (ui/uploads.py) take up to security.limits.max-upload-size.
UPLOAD_PATHS = re.compile(r"^/(api/ml/(models/[^/]+/versions|datasets)|ui/upload/(model|dataset))/?$")
DECODERS = {b"gzip": 31, b"deflate": 15}  # zlib `wbits` by Content-Encoding
CLOSE = [(b"connection", b"close")]


class RequestHeaders:
    """The request headers the pipeline reads, in one pass. Where a header is sent twice the first copy
    counts, as in Starlette's `Headers.get`, so every route and the fast path read the same one."""

    __slots__ = (
        "api_key",
        "authorization",
        "content_type",
        "encoding",
        "gzip",
        "infer_length",
        "length",
        "raw",
        "request_id",
    )

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self.length = self.request_id = self.api_key = self.authorization = self.infer_length = None
        self.content_type: bytes | None = None
        self.encoding = b""
        self.gzip = False
        seen: set[bytes] = set()
        for name, value in raw:
            if name in seen:
                continue
            seen.add(name)
            if name == b"content-length":
                self.length = value
            elif name == b"x-api-key":
                self.api_key = value
            elif name == b"authorization":
                self.authorization = value
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"content-encoding":
                self.encoding = value.strip().lower()
            elif name == b"accept-encoding":
                self.gzip = b"gzip" in value
            elif name == b"inference-header-content-length":
                self.infer_length = value
            elif name == b"content-type":
                self.content_type = value

    @property
    def encoded(self) -> bool:
        return self.encoding not in (b"", b"identity")

    def key(self) -> str | None:
        return presented_key(text(self.api_key), text(self.authorization))

    def get(self, name: str) -> str | None:
        """Any header by lower-case name, the first copy (a scan: for the rare reader, such as an
        experiment that keeps callers on a variant by a header)."""
        wanted = name.encode("latin-1")
        return next((value.decode("latin-1") for key, value in self.raw if key == wanted), None)


def text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """`X-API-Key`, else an `Authorization: Bearer` token."""
    if api_key:
        return api_key
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --- request id ---------------------------------------------------------------------------------------------


def begin_request(supplied: bytes | None) -> str:
    """The request's id (the client's `X-Request-ID` when well formed, else a new one), bound to every log
    line written while the request runs."""
    candidate = supplied.decode("latin-1") if supplied else ""
    request_id = candidate if GOOD_REQUEST_ID.fullmatch(candidate) else new_id()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


# --- body limits and decompression --------------------------------------------------------------------------


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """The body limit of a request and the setting that sets it: uploads have their own."""
    if method == "POST" and UPLOAD_PATHS.match(path):
        return settings.security.limits.max_upload_size, "security.limits.max-upload-size"
    return settings.server.max_body_size, "server.max-body-size"


def too_large(limit: int, setting: str, what: str = "is larger than") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body {what} {setting} ({limit} bytes)", details={"field": "body", "limit_bytes": limit}
    )


def check_declared_length(headers: RequestHeaders, limit: int, setting: str) -> None:
    """Refuse by `Content-Length` before anything is read."""
    if headers.length is None:
        return
    if not headers.length.isdigit():
        raise BadRequest(
            "Content-Length is not a number", details={"field": "Content-Length", "problem": "not a number"}
        )
    if int(headers.length) > limit:
        raise too_large(limit, setting)


async def read_body(receive: Receive, limit: int, setting: str) -> bytes | None:
    """The whole body, refused past `limit` while it streams in; None when the client went away."""
    message: Message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise too_large(limit, setting)
        return body
    parts, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise too_large(limit, setting)
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def check_encoding(headers: RequestHeaders) -> None:
    if headers.encoded and headers.encoding not in DECODERS:
        encoding = headers.encoding.decode("latin-1")
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; use gzip or deflate",
            details={"field": "Content-Encoding", "problem": "not supported"},
        )


def inflate(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A gzip or deflate body, inflated; one that inflates past `limit` is refused, so a small compressed bomb
    cannot take the instance's memory."""
    inflater = zlib.decompressobj(wbits=DECODERS[encoding])
    try:
        inflated = inflater.decompress(body, limit + 1)
        if len(inflated) > limit or inflater.unconsumed_tail:
            raise too_large(limit, "security.limits.max-decompressed-size", "inflates past")
        return inflated + inflater.flush()
    except zlib.error as exc:
        raise BadRequest(
            f"request body is not valid {encoding.decode()} data: {exc}",
            details={"field": "body", "problem": f"not valid {encoding.decode()} data"},
        ) from None


def inflated_headers(raw: RawHeaders, size: int) -> RawHeaders:
    """A decompressed request's headers, as the routes should see them."""
    kept = [(k, v) for k, v in raw if k not in (b"content-encoding", b"content-length")]
    return [*kept, (b"content-length", str(size).encode())]


def check_media_type(headers: RequestHeaders, accepted: tuple[str, ...]) -> None:
    """A body whose Content-Type is not one of `accepted` (JSON, also `+json` types) is refused with 415; one
    without a Content-Type is taken as what the route reads, as many inference clients send none."""
    if headers.content_type is None:
        return
    media = headers.content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    if media in accepted or ("application/json" in accepted and is_json(media)):
        return
    raise refuse_media_type(media, " or ".join(accepted))


# --- API key and rate limit ---------------------------------------------------------------------------------


# Answered before start-up work is done: probes, metrics and the API's own description.
OPEN_WHILE_STARTING = ("/actuator/", "/v2/health/", "/docs", "/openapi.json")


def check_started(platform: Platform, path: str) -> None:
    """Until start-up work is done (API keys, registry and preloaded models loaded), every other request is
    answered 503 with `Retry-After`, before anything is read or done: a load balancer that sends traffic as
    soon as the port opens (nginx has no readiness checks) passes it on to another instance, where it would
    otherwise get a 404 for a model not yet known here."""
    if platform.lifecycle.started or path.startswith(OPEN_WHILE_STARTING):
        return
    reason = platform.lifecycle.startup_error or "start-up work is not done yet"
    raise Unavailable(f"this instance is starting: {reason}", retry_after=1)


async def authorize(
    platform: Platform, headers: RequestHeaders, client: str, permission: Permission
) -> tuple[Principal, RawHeaders]:
    """The caller, checked against `permission` and its rate limit; the rate-limit headers to answer with."""
    principal, decision = await platform.auth.guard(headers.key(), client, permission)
    return principal, decision.headers() if decision is not None else []


def client_address(scope: MutableMapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# --- errors -------------------------------------------------------------------------------------------------


def error_reply(exc: Exception, path: str, request_id: str | None) -> JsonResponse:
    """Any exception as the one error shape; an unexpected one is logged with its traceback."""
    if isinstance(exc, DomainError):
        return domain_response(exc, path)
    if isinstance(exc, RequestValidationError):
        return validation_response(exc.errors(), path)
    if isinstance(exc, StarletteHTTPException):
        code = HTTP_CODES.get(exc.status_code, "error")
        # The framework's own 400s all mean one thing: the body could not be read (malformed multipart...).
        details = [{"field": "body", "problem": str(exc.detail)}] if exc.status_code == 400 else None
        return error_response(
            exc.status_code, code, str(exc.detail), details, dict(exc.headers or {}), path=path
        )
    log.error("unhandled error", path=path, exc_info=exc)
    return error_response(
        500,
        "internal_error",
        "internal error; the request id finds it in the logs",
        {"request_id": request_id},
        path=path,
    )


def error_parts(exc: Exception, path: str, request_id: str | None) -> tuple[int, bytes, RawHeaders]:
    """Status, body and the headers worth keeping (Retry-After, rate limits) of `error_reply`."""
    response = error_reply(exc, path, request_id)
    keep = [(k, v) for k, v in response.raw_headers if k not in (b"content-length", b"content-type")]
    return response.status_code, bytes(response.body), keep


# --- response headers and compression -----------------------------------------------------------------------


def response_headers(request_id: str, rate: Sequence[tuple[bytes, bytes]], draining: bool) -> RawHeaders:
    """What every answer carries: its request id, the caller's rate-limit state, and, while the instance
    drains before shutdown, `Connection: close`, so keep-alive clients reconnect to another instance."""
    headers = [(b"x-request-id", request_id.encode()), *rate]
    return headers + CLOSE if draining else headers


def should_compress(
    settings: CompressionSettings, accepts_gzip: bool, size: int, headers: Iterable[tuple[bytes, bytes]]
) -> bool:
    if not (settings.enabled and accepts_gzip and size >= settings.min_response_size):
        return False
    return all(name != b"content-encoding" for name, _ in headers)


def compress(content: bytes) -> tuple[bytes, RawHeaders]:
    return gzip.compress(content, compresslevel=6), [
        (b"content-encoding", b"gzip"),
        (b"vary", b"Accept-Encoding"),
    ]


# --- access log and metrics ---------------------------------------------------------------------------------


class AccessLog:
    """`http_server_requests_seconds` per method, route template and status, and a debug line per request
    (`logging.level.mlplatform.access: debug` turns it on)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.timers: dict[tuple[str, str, int], Any] = {}  # metric children, looked up once
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        timer = self.timers.get((method, route, status))
        if timer is None:
            timer = self.timers[(method, route, status)] = self.metrics.http_requests.labels(
                method, route, str(status)
            )
        timer.observe(seconds)
        if self.logger.isEnabledFor(logging.DEBUG):  # cached by `logging`: the hot path pays a lookup
            access_log.debug(
                "request", method=method, route=route, status=status, ms=round(seconds * 1000, 3)
            )
