"""The one HTTP error shape, `{"error": {"code", "message", "details"}}`, and the domain-error table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlplatform import errors
from mlplatform.api.responses import JsonResponse

V2_PREFIX = "/v2/"

STATUS: dict[type[errors.DomainError], int] = {
    errors.BadRequest: 400,
    errors.InvalidInput: 422,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
) -> JsonResponse:
    # The Open Inference Protocol wants `{"error": "<message>"}` (tritonclient prints that string);
    # our code and details ride along beside it.
    body = (
        {"error": message, "code": code, "details": details}
        if path.startswith(V2_PREFIX)
        else error_body(code, message, details)
    )
    return JsonResponse(body, status_code=status, headers=headers)


def status_of(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def domain_response(exc: errors.DomainError, path: str) -> JsonResponse:
    headers = exc.headers if isinstance(exc, errors.RateLimited | errors.Unavailable) else None
    return error_response(status_of(exc), exc.code, exc.message, exc.details, headers, path=path)


def validation_response(problems: Sequence[Any], path: str) -> JsonResponse:
    details = [{"field": _field(e.get("loc", ())), "problem": str(e.get("msg", "invalid"))} for e in problems]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    return error_response(422, "invalid_input", f"invalid request: {summary}", details, path=path)
