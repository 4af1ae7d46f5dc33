"""A JSON response rendered with orjson (numpy-aware), used by every handler that builds one by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=_OPTIONS, default=str)


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


@dataclass(frozen=True, slots=True)
class Reply:
    """A response that is not JSON (or is already encoded): what a handler returns to the fast path and to
    its FastAPI route alike."""

    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(self.body, media_type=self.media_type, headers=self.headers)
