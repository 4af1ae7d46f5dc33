"""Typed FastAPI dependencies: the platform, and the API-key guard every /api route sits behind."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from mlplatform.api.pipeline import RequestHeaders, authorize, client_address
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.platform import Platform


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def require(permission: Permission) -> Any:
    """A dependency that authenticates, rate-limits and authorises the request, returning its `Principal`.

    It runs the pipeline's own step (`pipeline.authorize`) on the headers the pipeline parsed, rather than
    FastAPI security classes: each sub-dependency costs a resolution on every request. OpenAPI learns about
    the scheme from `document_security`.
    """

    async def guard(request: Request) -> Principal:
        platform: Platform = request.app.state.platform
        state = request.scope["state"]
        headers = state.get("headers") or RequestHeaders(request.scope["headers"])
        principal, rate = await authorize(platform, headers, client_address(request.scope), permission)
        state["rate_headers"] = rate
        state["principal"] = principal
        return principal

    guard.__name__ = f"require_{permission.value}"
    return Depends(guard)


def require_unless_public(endpoint: str) -> Any:
    """Actuator endpoints other than health: a `read` key unless `management.public` lists the endpoint."""
    read = require(Permission.READ).dependency

    async def guard(request: Request) -> Principal | None:
        platform: Platform = request.app.state.platform
        if endpoint in platform.settings.management.public:
            return None
        return await read(request)  # type: ignore[no-any-return]

    guard.__name__ = "require_read_unless_public"
    return Depends(guard)


SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "an API key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "the same API key as a bearer token"},
}


def document_security(app: FastAPI) -> None:
    """Mark every guarded operation in OpenAPI (so /docs offers "Authorize"), from the routes' own guards."""
    guarded: set[tuple[str, str]] = set()
    for route in _routes(app.router.routes):
        names = {getattr(d.call, "__name__", "") for d in route.dependant.dependencies}
        if any(name.startswith("require_") for name in names):
            guarded |= {(route.path, method.lower()) for method in route.methods}
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, methods in schema.get("paths", {}).items():
            for method, operation in methods.items():
                if (path, method) in guarded:
                    operation["security"] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _routes(routes: list[Any]) -> list[Any]:
    found = []
    for route in routes:
        if hasattr(route, "dependant"):
            found.append(route)
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested:
            found.extend(_routes(nested))
    return found
