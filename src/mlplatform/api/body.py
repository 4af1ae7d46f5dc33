"""Request bodies parsed with orjson and validated by the schema, with FastAPI's 422 shape on failure.

The predict paths use this instead of FastAPI's body parameters: the standard library's JSON decoder costs
milliseconds on a thousand-row batch. Every other JSON body goes through it too (`ContractRoute`), so all
routes refuse alike what is not JSON: NaN and Infinity (naming the field), text that is not UTF-8, nesting
past orjson's depth limit (1024). A body that is not of the route's media type is 415.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from mlplatform.bounds import NUL_PROBLEM
from mlplatform.errors import UnsupportedMediaType

T = TypeVar("T", bound=BaseModel)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        where, problem = _non_finite(raw) or ((), f"not valid JSON: {exc}")
        raise RequestValidationError(
            [{"loc": ("body", *where), "msg": problem, "type": "json_invalid"}]
        ) from None


class _NonFinite:
    def __init__(self, token: str) -> None:
        self.token = token


def _non_finite(raw: bytes) -> tuple[tuple[str | int, ...], str] | None:
    """Where the first NaN/Infinity (or a number too large for a double) is, when that is what orjson refused.

    Only on the error path: the standard library's decoder accepts those tokens and hands them to hooks.
    """

    def number(text: str) -> float | _NonFinite:
        value = float(text)
        return value if value - value == 0 else _NonFinite(text)

    try:
        data = json.loads(raw, parse_constant=_NonFinite, parse_float=number)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _NonFinite):
            return where, f"{value.token[:40]} is not a finite JSON number"
        if isinstance(value, dict):
            stack.extend(((*where, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*where, i), v) for i, v in reversed(list(enumerate(value))))
    return None


def validate(data: Any, schema: type[T]) -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def decode(raw: bytes, schema: type[T]) -> T:
    return validate(loads(raw), schema)


def body_schema(schema: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """`openapi_extra` that documents a body read by `decode` (nested models inlined: `openapi_extra` cannot
    add components)."""
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(schema)}},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def inline_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models inlined, for places that cannot add components."""
    generated = schema.model_json_schema()
    inlined: dict[str, Any] = _inlined(generated, generated.pop("$defs", {}))
    return inlined


def _inlined(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inlined(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _inlined(definitions[ref.removeprefix("#/$defs/")], definitions)
    return {key: _inlined(value, definitions) for key, value in node.items()}


def media_type(request: Request) -> str:
    message = email.message.Message()
    message["content-type"] = request.headers.get("content-type", "")
    return message.get_content_type() if request.headers.get("content-type") else ""


def is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def refuse_media_type(media: str, expected: str) -> UnsupportedMediaType:
    problem = f"{media or 'no Content-Type'}; expected {expected}"
    return UnsupportedMediaType(
        f"unsupported media type: {problem}", details=[{"field": "Content-Type", "problem": problem}]
    )


def _check_parameters(request: Request) -> None:
    """Path and query values hold no NUL: no database stores one in text (PostgreSQL refuses it)."""
    where = [("path", k, v) for k, v in request.path_params.items() if isinstance(v, str)]
    where += [("query", k, v) for k, v in request.query_params.multi_items()]
    errors = [
        {"loc": (place, name), "msg": NUL_PROBLEM, "type": "string_nul"}
        for place, name, value in where
        if "\x00" in value
    ]
    if errors:
        raise RequestValidationError(errors)


class _ParsedRequest(Request):
    """The request with its JSON body already read and parsed by `loads`."""

    def __init__(self, request: Request, raw: bytes, data: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._raw = raw
        self._data = data

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._data


class ContractRoute(APIRoute):
    """An `APIRoute` whose body must be of its declared media type (else 415), whose JSON is read by `loads`
    (else FastAPI's `json.loads` takes NaN and answers 400 without naming what failed), and whose path and
    query values may not hold NUL (422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # The API-key guard (`deps.require`) runs first: no check of parameters or body, and no parsing, for a
        # caller without a key. FastAPI runs it again as a dependency, which returns what it found here.
        guards: list[Callable[[Request], Awaitable[Any]]] = [
            d.call
            for d in self.dependant.dependencies
            if d.call is not None and getattr(d.call, "__name__", "").startswith("require_")
        ]
        if self.body_field is None:

            async def parameters_checked(request: Request) -> Response:
                for guard in guards:
                    await guard(request)
                _check_parameters(request)
                return await handler(request)

            return parameters_checked
        form = isinstance(self.body_field.field_info, params.Form)

        async def checked(request: Request) -> Response:
            for guard in guards:
                await guard(request)
            _check_parameters(request)
            media = media_type(request)
            if form:  # streamed to the form parser, not read here: uploads may be large
                has_body = media or request.headers.get("content-length", "0") != "0"
                if has_body and media not in FORM_TYPES:
                    raise refuse_media_type(media, " or ".join(FORM_TYPES))
                return await handler(request)
            raw = await request.body()
            if not raw:
                return await handler(request)
            if not media:  # taken as JSON, as on the predict paths (inference clients often send none)
                request.scope["headers"] = [*request.scope["headers"], (b"content-type", b"application/json")]
            elif not is_json(media):
                raise refuse_media_type(media, "application/json")
            return await handler(_ParsedRequest(request, raw, loads(raw)))

        return checked
