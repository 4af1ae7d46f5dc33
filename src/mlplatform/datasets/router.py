"""`/api/ml/datasets`: upload CSV or Parquet tables, browse them, download and delete them."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, Query, UploadFile, status
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.openapi import file_response
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Offset
from mlplatform.datasets.schemas import DatasetMetadata, DatasetRead, Page
from mlplatform.errors import InvalidInput

router = APIRouter(prefix="/api/ml/datasets", tags=["datasets"], route_class=ContractRoute)
Reader = Annotated[Principal, require(Permission.READ)]
Writer = Annotated[Principal, require(Permission.WRITE)]
Limit = Annotated[int, Query(ge=1, le=1000)]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def actor(principal: Principal) -> str:
    return f"{principal.owner} ({principal.key_id})"


def parse_metadata(description: str, tags: str) -> DatasetMetadata:
    raw: dict[str, Any] = {"description": description}
    try:
        raw["tags"] = orjson.loads(tags or "{}")
    except orjson.JSONDecodeError as exc:
        problem = f"not a JSON object: {exc}"
        raise InvalidInput(f"tags: {problem}", details=[{"field": "tags", "problem": problem}]) from None
    try:
        return DatasetMetadata.model_validate(raw)
    except ValidationError as exc:
        details = [{"field": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        raise InvalidInput(f"invalid dataset metadata: {summary}", details=details) from None


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_dataset(
    platform: PlatformDep,
    principal: Writer,
    file: Annotated[UploadFile, File(description="a CSV (UTF-8, with a header row) or Parquet file")],
    name: Annotated[str, Form(description="lowercase letters, digits, '-', '_', '.'")],
    description: Annotated[str, Form()] = "",
    tags: Annotated[str, Form(description='a JSON object of strings, e.g. {"team": "risk"}')] = "{}",
) -> DatasetRead:
    metadata = parse_metadata(description, tags)
    return await platform.datasets.upload(
        name=name, source=file.file, metadata=metadata, actor=actor(principal)
    )


@router.get("")
async def list_datasets(
    platform: PlatformDep,
    _: Reader,
    name: Annotated[str | None, Query(description="only datasets with exactly this name")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DatasetRead]:
    return await platform.datasets.list_datasets(name=name, limit=limit, offset=offset)


@router.get("/{dataset_id}")
async def get_dataset(dataset_id: str, platform: PlatformDep, _: Reader) -> DatasetRead:
    return await platform.datasets.get(dataset_id)


@router.get(
    "/{dataset_id}/data",
    response_class=Response,
    responses=file_response("text/csv", MEDIA_TYPES["parquet"], description="the file as uploaded"),
)
async def download_dataset(dataset_id: str, platform: PlatformDep, _: Reader) -> StreamingResponse:
    found, chunks = await platform.datasets.download(dataset_id)
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[found.format],
        headers={
            "Content-Disposition": f'attachment; filename="{found.name}-{found.id}.{found.format}"',
            "Content-Length": str(found.size_bytes),
            "X-Dataset-SHA256": found.sha256,
        },
    )


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(dataset_id: str, platform: PlatformDep, principal: Writer) -> Response:
    await platform.datasets.delete(dataset_id, actor=actor(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
