"""`/api/ml/models`: register, browse, stage, alias, trace and delete model versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, File, Form, Query, UploadFile, status
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.openapi import file_response
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Offset, VersionNumber
from mlplatform.errors import InvalidInput
from mlplatform.registry.refs import check_alias, check_name
from mlplatform.registry.schemas import (
    AliasesAt,
    AliasSet,
    HistoryEntry,
    Lineage,
    ModelRead,
    ModelUpdate,
    Page,
    StageChange,
    VersionMetadata,
    VersionRead,
)
from mlplatform.registry.service import Upload
from mlplatform.registry.store import ModelFilter

router = APIRouter(prefix="/api/ml/models", tags=["registry"], route_class=ContractRoute)
Reader = Annotated[Principal, require(Permission.READ)]
Writer = Annotated[Principal, require(Permission.WRITE)]
Limit = Annotated[int, Query(ge=1, le=1000)]


def actor(principal: Principal) -> str:
    return f"{principal.owner} ({principal.key_id})"


def parse_metadata(raw: str) -> VersionMetadata:
    try:
        return VersionMetadata.model_validate(orjson.loads(raw or "{}"))
    except orjson.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc}"
        raise InvalidInput(
            f"metadata: {problem}", details=[{"field": "metadata", "problem": problem}]
        ) from None
    except ValidationError as exc:
        details = [
            {"field": ".".join(["metadata", *map(str, e["loc"])]), "problem": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        raise InvalidInput(f"invalid metadata: {summary}", details=details) from None


@router.post("/{name}/versions", status_code=status.HTTP_201_CREATED)
async def register_version(
    name: str,
    platform: PlatformDep,
    principal: Writer,
    file: Annotated[
        UploadFile, File(description="the model artifact (skops, XGBoost, LightGBM, ONNX, Keras, MLflow zip)")
    ],
    metadata: Annotated[str, Form(description="JSON: description, tags, metrics, parent, hints...")] = "{}",
    reference: Annotated[
        UploadFile | None, File(description="optional: a CSV or Parquet reference sample for drift checks")
    ] = None,
) -> VersionRead:
    check_name(name)
    upload = Upload(
        source=file.file,
        filename=file.filename or "model",
        metadata=parse_metadata(metadata),
        reference=reference.file if reference is not None else None,
    )
    return await platform.registry.register(name, upload, actor=actor(principal))


@router.get("")
async def list_models(
    platform: PlatformDep,
    _: Reader,
    prefix: str | None = None,
    stage: Annotated[str | None, Query(description="staging, production, archived or any alias")] = None,
    tag: Annotated[str | None, Query(description="key:value")] = None,
    framework: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ModelRead]:
    pair = None
    if tag is not None:
        key, sep, value = tag.partition(":")
        if not sep:
            raise InvalidInput(
                "tag filter must be key:value", details=[{"field": "tag", "problem": "expected key:value"}]
            )
        pair = (key, value)
    where = ModelFilter(prefix=prefix, stage=stage, tag=pair, framework=framework)
    return await platform.registry.list_models(where, limit=limit, offset=offset)


@router.get("/{name}")
async def get_model(name: str, platform: PlatformDep, _: Reader) -> ModelRead:
    return await platform.registry.get_model(check_name(name))


@router.patch("/{name}")
async def update_model(name: str, change: ModelUpdate, platform: PlatformDep, _: Writer) -> ModelRead:
    return await platform.registry.update_model(check_name(name), change)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(
    name: str,
    platform: PlatformDep,
    principal: Writer,
    purge: Annotated[bool, Query(description="remove rows and stored objects instead of archiving")] = False,
) -> Response:
    await platform.registry.delete_model(check_name(name), purge=purge, actor=actor(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/versions")
async def list_versions(
    name: str, platform: PlatformDep, _: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[VersionRead]:
    return await platform.registry.list_versions(check_name(name), limit=limit, offset=offset)


@router.get("/{name}/versions/{version}")
async def get_version(name: str, version: VersionNumber, platform: PlatformDep, _: Reader) -> VersionRead:
    return await platform.registry.get_version(check_name(name), version)


@router.patch("/{name}/versions/{version}")
async def update_version(
    name: str, version: VersionNumber, change: ModelUpdate, platform: PlatformDep, _: Writer
) -> VersionRead:
    return await platform.registry.update_version(check_name(name), version, change)


@router.delete("/{name}/versions/{version}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_version(
    name: str,
    version: VersionNumber,
    platform: PlatformDep,
    principal: Writer,
    purge: Annotated[
        bool, Query(description="remove the row and stored objects instead of archiving")
    ] = False,
) -> Response:
    await platform.registry.delete_version(check_name(name), version, purge=purge, actor=actor(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/versions/{version}/stage")
async def set_stage(
    name: str, version: VersionNumber, change: StageChange, platform: PlatformDep, principal: Writer
) -> VersionRead:
    return await platform.registry.set_stage(check_name(name), version, change.stage, actor=actor(principal))


@router.put("/{name}/aliases/{alias}")
async def set_alias(
    name: str, alias: str, body: AliasSet, platform: PlatformDep, principal: Writer
) -> VersionRead:
    return await platform.registry.set_alias(
        check_name(name), check_alias(alias), body.version, actor=actor(principal)
    )


@router.delete("/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_alias(name: str, alias: str, platform: PlatformDep, principal: Writer) -> Response:
    await platform.registry.remove_alias(check_name(name), alias, actor=actor(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/versions/{version}/lineage")
async def lineage(name: str, version: VersionNumber, platform: PlatformDep, _: Reader) -> Lineage:
    return await platform.registry.lineage(check_name(name), version)


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=Response,
    responses=file_response("application/octet-stream", description="the artifact as uploaded"),
)
async def download(name: str, version: VersionNumber, platform: PlatformDep, _: Reader) -> StreamingResponse:
    found, chunks = await platform.registry.download(check_name(name), version)
    file_name = f"{found.id}-{found.artifact.format}"
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{file_name}"',
            "Content-Length": str(found.artifact.size),
            "X-Artifact-SHA256": found.artifact.sha256,
        },
    )


@router.get("/{name}/history", response_model=None)
async def history(
    name: str,
    platform: PlatformDep,
    _: Reader,
    at: Annotated[
        datetime | None, Query(description="which version each alias pointed at, at this time")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[HistoryEntry] | AliasesAt:
    check_name(name)
    if at is not None:
        if at.tzinfo is None:
            raise InvalidInput(
                "at must include a timezone, e.g. 2026-11-26T12:00:00Z",
                details=[{"field": "at", "problem": "no timezone"}],
            )
        return await platform.registry.aliases_at(name, at)
    return await platform.registry.history(name, limit=limit, offset=offset)
