"""The OpenAPI document made true: the API-key scheme, and every error status each operation can answer.

FastAPI documents the success response and, for operations with parameters, a 422 in its own
`HTTPValidationError` shape, which is not ours. `document_contract` post-processes the generated document:
each error status an operation can answer is derived from what the operation is (guarded by an API key,
has a body, has parameters, has path parameters) and points at the one error schema (`ErrorResponse`, or
`V2ErrorResponse` under `/v2/`). What the rules cannot see is declared on the route:
`responses=errors(...)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "an API key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "the same API key as a bearer token"},
}
SECURITY: list[dict[str, list[str]]] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]

DESCRIPTIONS = {
    400: "the body could not be read (malformed multipart, bad gzip)",
    401: "no API key, or an unknown, expired or revoked one",
    403: "the key's role does not allow this",
    404: "what the request names does not exist",
    409: "conflicts with the current state",
    413: "the body is over server.max-body-size (uploads: security.limits.max-upload-size)",
    415: "the body is not of the media type the operation reads (or has an unknown Content-Encoding)",
    422: "a parameter or the body is invalid; details name each field",
    429: "over the key's rate limit; Retry-After says when to come back",
    503: "a backend the request needs (database, cache, storage) is unavailable",
    504: "the model did not answer within ml.predictions.timeout-ms",
}

_REF = "#/components/schemas/"
_PROBLEM = {
    "type": "object",
    "required": ["field", "problem"],
    "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
}
_DETAILS = {
    "anyOf": [{"type": "array", "items": {"$ref": f"{_REF}Problem"}}, {"type": "object"}, {"type": "null"}],
    "description": "a list of {field, problem}, or an object naming the field and what else helps",
}
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": _PROBLEM,
    "ErrorDetails": _DETAILS,
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "description": "stable, e.g. not_found, invalid_input"},
                    "message": {"type": "string", "description": "for people"},
                    "details": {"$ref": f"{_REF}ErrorDetails"},
                },
            }
        },
    },
    "V2ErrorResponse": {
        "type": "object",
        "description": "the Open Inference Protocol's error, with our code and details beside it",
        "required": ["error", "code", "details"],
        "properties": {
            "error": {"type": "string"},
            "code": {"type": "string"},
            "details": {"$ref": f"{_REF}ErrorDetails"},
        },
    },
}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

# The prediction routes' body names a model (404 when unknown and no fallback is configured) and they run
# it under a deadline. They live in modules being rewritten now; move these onto their decorators then.
EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/api/ml/predict"): (404, 504),
    ("post", "/api/ml/predict/batch"): (404, 504),
    ("post", "/v2/models/{model}/infer"): (504,),
    ("post", "/v2/models/{model}/versions/{version}/infer"): (504,),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the error statuses a route answers that `document_contract` cannot derive."""
    return {status: {"description": DESCRIPTIONS[status]} for status in statuses}


def derived_statuses(operation: dict[str, Any], *, guarded: bool) -> set[int]:
    """The error statuses an operation can answer, from what it is."""
    statuses: set[int] = set()
    if guarded:  # the key is checked (401, 403), counted (429) and looked up (503)
        statuses |= {401, 403, 429, 503}
    if "requestBody" in operation:  # read (400, 413, 415) and validated (422)
        statuses |= {400, 413, 415, 422}
    where = {parameter["in"] for parameter in operation.get("parameters", [])}
    if where:
        statuses.add(422)
    if "path" in where:
        statuses.add(404)
    return statuses


def document_contract(app: FastAPI) -> None:
    """Post-process `app`'s OpenAPI document once, when first asked for: security and error responses."""
    guarded = _guarded_operations(app)
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        components["securitySchemes"] = SECURITY_SCHEMES
        schemas = components.setdefault("schemas", {})
        schemas.update(ERROR_SCHEMAS)
        for path, methods in schema.get("paths", {}).items():
            for method, operation in methods.items():
                is_guarded = (path, method) in guarded
                if is_guarded:
                    operation["security"] = SECURITY
                statuses = derived_statuses(operation, guarded=is_guarded) | set(
                    EXTRA.get((method, path), ())
                )
                _document_errors(operation, statuses, "V2ErrorResponse" if path.startswith("/v2") else None)
        for name in _FASTAPI_VALIDATION:
            schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_errors(operation: dict[str, Any], statuses: set[int], v2_schema: str | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
    error = {"$ref": _REF + (v2_schema or "ErrorResponse")}
    for code, response in responses.items():
        if not code.isdigit() or int(code) < 400:
            continue
        content = response.get("content", {}).get("application/json", {})
        declared = content.get("schema", {}).get("$ref", "").removeprefix(_REF)
        if not declared or declared in _FASTAPI_VALIDATION:
            response["content"] = {"application/json": {"schema": error}}
    operation["responses"] = dict(sorted(responses.items()))


def _guarded_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every operation behind an API-key guard (`api.deps.require`'s `require_…`)."""
    guarded: set[tuple[str, str]] = set()
    for route in _routes(app.router.routes):
        names = {getattr(d.call, "__name__", "") for d in route.dependant.dependencies}
        if any(name.startswith("require_") for name in names):
            guarded |= {(route.path, method.lower()) for method in route.methods}
    return guarded


def _routes(routes: list[Any]) -> list[Any]:
    found = []
    for route in routes:
        if hasattr(route, "dependant"):
            found.append(route)
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested:
            found.extend(_routes(nested))
    return found


def file_response(*media_types: str, description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a 200 whose body is a file (with `response_class=Response`, so no JSON is claimed)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": description, "content": dict.fromkeys(media_types, binary)}}
