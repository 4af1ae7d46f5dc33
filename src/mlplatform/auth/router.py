"""`/api/admin/api-keys`: create (the key is shown once), list, read and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require
from mlplatform.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, Permission

router = APIRouter(
    prefix="/api/admin/api-keys",
    tags=["admin"],
    dependencies=[require(Permission.ADMIN)],
    route_class=ContractRoute,
)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(body: ApiKeyCreate, platform: PlatformDep) -> ApiKeyCreated:
    return await platform.auth.create_key(body)


@router.get("")
async def list_keys(platform: PlatformDep, include_revoked: bool = False) -> list[ApiKeyRead]:
    return await platform.auth.list_keys(include_revoked=include_revoked)


@router.get("/{key_id}")
async def get_key(key_id: str, platform: PlatformDep) -> ApiKeyRead:
    return await platform.auth.get_key(key_id)


@router.delete("/{key_id}")
async def revoke_key(key_id: str, platform: PlatformDep) -> ApiKeyRead:
    return await platform.auth.revoke_key(key_id)
