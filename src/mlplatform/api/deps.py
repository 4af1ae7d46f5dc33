"""Typed FastAPI dependencies: the platform, and the API-key guard every /api route sits behind."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

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
    the scheme from `api.openapi.document_contract`.
    """

    async def guard(request: Request) -> Principal:
        platform: Platform = request.app.state.platform
        state = request.scope["state"]
        done = state.get("authorized")
        if done is not None and done[0] is permission:  # already run for this request (`ContractRoute`)
            principal: Principal = done[1]
            return principal
        headers = state.get("headers") or RequestHeaders(request.scope["headers"])
        principal, rate = await authorize(platform, headers, client_address(request.scope), permission)
        state["rate_headers"] = rate
        state["authorized"] = (permission, principal)
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
