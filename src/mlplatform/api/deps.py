"""Typed FastAPI dependencies: the platform, and the API-key guard every /api route sits behind."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mlplatform.auth.schemas import Permission, Principal
from mlplatform.platform import Platform


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


# Declared as security schemes so OpenAPI (and the /docs "Authorize" button) shows what each route needs.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an mlplatform API key")
BEARER = HTTPBearer(auto_error=False, description="the same API key as a bearer token")
ApiKeyHeaderDep = Annotated[str | None, Security(API_KEY_HEADER)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def require(permission: Permission) -> Any:
    """A dependency that authenticates, rate-limits and authorises the request, returning its `Principal`."""

    async def guard(request: Request, header: ApiKeyHeaderDep, bearer: BearerDep) -> Principal:
        platform: Platform = request.app.state.platform
        client = request.client.host if request.client else "unknown"
        key = header or (bearer.credentials if bearer else None)
        principal, decision = await platform.auth.guard(key, client, permission)
        if decision is not None:
            request.state.rate_headers = decision.headers()
        request.state.principal = principal
        return principal

    guard.__name__ = f"require_{permission.value}"
    return Depends(guard)


def require_unless_public(endpoint: str) -> Any:
    """Actuator endpoints other than health: a `read` key unless `management.public` lists the endpoint."""
    read = require(Permission.READ).dependency

    async def guard(request: Request, header: ApiKeyHeaderDep, bearer: BearerDep) -> Principal | None:
        platform: Platform = request.app.state.platform
        if endpoint in platform.settings.management.public:
            return None
        return await read(request, header, bearer)  # type: ignore[no-any-return]

    return Depends(guard)
