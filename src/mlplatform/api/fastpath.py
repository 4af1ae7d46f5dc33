"""The predict routes served straight from ASGI, before FastAPI's routing and dependency resolution.

Measured in-process on one LightGBM model, routing and resolving dependencies cost more than the rest of a
single prediction together. The same handlers (`serving.router.serve_*`) and the same guard run here; the
FastAPI routes stay for OpenAPI and /docs.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mlplatform.api.deps import api_key_of
from mlplatform.api.errors import domain_response, validation_response
from mlplatform.auth.schemas import Permission
from mlplatform.errors import DomainError
from mlplatform.platform import Platform
from mlplatform.serving.router import serve_batch, serve_predict

Handler = Callable[[Request, Platform], Awaitable[Response]]


@dataclass(frozen=True)
class _Route:
    path: str  # the label `RequestContextMiddleware` records, as for routed requests


ROUTES: dict[str, tuple[_Route, Handler]] = {
    "/api/ml/predict": (_Route("/api/ml/predict"), serve_predict),
    "/api/ml/predict/batch": (_Route("/api/ml/predict/batch"), serve_batch),
}


class PredictFastPath:
    def __init__(self, app: ASGIApp, platform: Platform) -> None:
        self.app = app
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, handler = found
        scope["route"] = route
        request = Request(scope, receive)
        try:
            client = scope["client"][0] if scope.get("client") else "unknown"
            _, decision = await self.platform.auth.guard(api_key_of(request), client, Permission.PREDICT)
            if decision is not None:
                scope["state"]["rate_headers"] = decision.headers()
            response = await handler(request, self.platform)
        except DomainError as exc:
            response = domain_response(exc, route.path)
        except RequestValidationError as exc:
            response = validation_response(exc.errors(), route.path)
        self._compress(request, response)
        await response(scope, receive, send)

    def _compress(self, request: Request, response: Response) -> None:
        """Gzip large answers (batches) for clients that accept it, as the generic middleware would."""
        compression = self.platform.settings.server.compression
        if not compression.enabled or len(response.body) < compression.min_response_size:
            return
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return
        response.body = gzip.compress(response.body, compresslevel=6)
        response.headers["content-encoding"] = "gzip"
        response.headers["content-length"] = str(len(response.body))
        response.headers["vary"] = "Accept-Encoding"
