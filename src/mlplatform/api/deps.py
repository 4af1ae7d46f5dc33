"""Typed FastAPI dependencies: the platform, and the API-key guard every /api route sits behind."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from mlplatform.auth.schemas import Permission, Principal
from mlplatform.platform import Platform


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """`X-API-Key`, else an `Authorization: Bearer` token."""
    if api_key:
        return api_key
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def api_key_of(request: Request) -> str | None:
    return presented_key(request.headers.get("x-api-key"), request.headers.get("authorization"))


def require(permission: Permission) -> Any:
    """A dependency that authenticates, rate-limits and authorises the request, returning its `Principal`.

    It reads the headers itself rather than through FastAPI security classes: each sub-dependency costs a
    resolution on every request of the predict path. OpenAPI learns about the scheme from
    `api.openapi.document_contract`.
    """

    async def guard(request: Request) -> Principal:
        platform: Platform = request.app.state.platform
        client = request.client.host if request.client else "unknown"
        principal, decision = await platform.auth.guard(api_key_of(request), client, permission)
        if decision is not None:
            request.state.rate_headers = decision.headers()
        request.state.principal = principal
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
