"""`/api/ml/feedback`, `/api/ml/models/{name}/monitoring` and drift: actual values in, performance, reference
samples and drift reports out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from mlplatform.api.body import ContractRoute, loads, validate
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.openapi import errors
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Offset, VersionNumber
from mlplatform.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from mlplatform.monitoring.schemas import (
    FEEDBACK_MAX_ITEMS,
    DriftReportPage,
    DriftReportRead,
    FeedbackCreate,
    FeedbackHistoryRead,
    FeedbackList,
    FeedbackResult,
    PerformanceRead,
    PerformanceTimelineRead,
    ReferenceRead,
    ReferenceSet,
)

router = APIRouter(prefix="/api/ml", tags=["monitoring"], route_class=ContractRoute)
Predictor = Annotated[Principal, require(Permission.PREDICT)]
Reader = Annotated[Principal, require(Permission.READ)]
Writer = Annotated[Principal, require(Permission.WRITE)]
Window = Annotated[str | None, Query(description="1h, 24h (default), 7d, …; ignored with from")]
Start = Annotated[datetime | None, Query(alias="from", description="inclusive, ISO 8601")]
End = Annotated[datetime | None, Query(alias="to", description="exclusive, ISO 8601; default now")]
_ITEM = FeedbackCreate.model_json_schema()
_FEEDBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        _ITEM,
                        {"type": "array", "items": _ITEM, "minItems": 1, "maxItems": FEEDBACK_MAX_ITEMS},
                    ]
                }
            }
        },
    }
}


def feedback_items(body: bytes) -> list[FeedbackCreate]:
    """One item or a list of them; a list's size is checked before its items are validated."""
    data = loads(body)
    if not isinstance(data, list):
        return [validate(data, FeedbackCreate)]
    if len(data) > FEEDBACK_MAX_ITEMS:
        problem = f"at most {FEEDBACK_MAX_ITEMS} feedback items per request, got {len(data)}"
        raise PayloadTooLarge(problem, details=[{"field": "body", "problem": problem}])
    return validate(data, FeedbackList).root


@router.post("/feedback", response_model=FeedbackResult, openapi_extra=_FEEDBACK_BODY)
async def feedback(request: Request, platform: PlatformDep, principal: Predictor) -> FeedbackResult:
    items = feedback_items(await request.body())
    return await platform.monitoring.add_feedback(
        items=items, actor=f"{principal.owner} ({principal.key_id})"
    )


@router.get("/feedback/{prediction_id}")
async def feedback_history(prediction_id: str, platform: PlatformDep, _: Reader) -> list[FeedbackHistoryRead]:
    return await platform.monitoring.feedback_history(prediction_id=prediction_id)


@router.get("/models/{name}/monitoring", response_model=PerformanceRead)
async def performance(
    name: str,
    platform: PlatformDep,
    _: Reader,
    window: Window = None,
    start: Start = None,
    end: End = None,
    version: Annotated[str | None, Query(description="a version number or full id; default: all")] = None,
) -> PerformanceRead:
    return await platform.monitoring.performance(
        model=name, version=version, window=window, start=start, end=end
    )


@router.get("/models/{name}/monitoring/timeline", response_model=PerformanceTimelineRead)
async def performance_timeline(
    name: str,
    platform: PlatformDep,
    _: Reader,
    window: Window = None,
    start: Start = None,
    end: End = None,
    version: Annotated[str | None, Query(description="a version number or full id; default: all")] = None,
    bucket: Annotated[
        str | None,
        Query(max_length=8, description="15m, 1h, 6h, 1d, …; default: 1h up to 2 days, 6h up to 14, else 1d"),
    ] = None,
) -> PerformanceTimelineRead:
    """The performance of each time bucket of the window, oldest first (at most 200 buckets)."""
    return await platform.monitoring.performance_over_time(
        model=name, version=version, window=window, start=start, end=end, bucket=bucket
    )


# --- drift ------------------------------------------------------------------------------------------------

_REFERENCE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "CSV or Parquet"}
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": ReferenceSet.model_json_schema()},
        },
    }
}


@router.put(
    "/models/{name}/versions/{version}/reference", response_model=ReferenceRead, openapi_extra=_REFERENCE_BODY
)
async def set_reference(
    name: str, version: VersionNumber, request: Request, platform: PlatformDep, principal: Writer
) -> ReferenceRead:
    """Replace the version's reference sample: a CSV/Parquet `file` (multipart), or JSON `{"dataset": id}`
    or `{"rows": [{feature: value, ...}, ...]}`. Columns other than the features are ignored in a file."""
    actor = f"{principal.owner} ({principal.key_id})"
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=0) as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                problem = "a multipart body needs a `file` part (CSV or Parquet)"
                raise InvalidInput(problem, details=[{"field": "file", "problem": problem}])
            return await platform.monitoring.set_reference(
                model=name, version=version, actor=actor, file=file.file
            )
    if content_type.startswith("application/json"):
        body = validate(loads(await request.body()), ReferenceSet)
        return await platform.monitoring.set_reference(
            model=name, version=version, actor=actor, dataset=body.dataset, rows=body.rows
        )
    problem = "send multipart/form-data (a `file` part) or application/json ({dataset} or {rows})"
    raise UnsupportedMediaType(problem, details=[{"field": "content-type", "problem": problem}])


@router.get("/models/{name}/versions/{version}/reference", response_model=ReferenceRead)
async def reference(name: str, version: VersionNumber, platform: PlatformDep, _: Reader) -> ReferenceRead:
    return await platform.monitoring.reference(model=name, version=version)


@router.post("/models/{name}/drift-check", response_model=DriftReportRead, responses=errors(409))
async def drift_check(
    name: str,
    platform: PlatformDep,
    _: Writer,
    version: Annotated[
        str | None, Query(description="a version number or full id; default: the default")
    ] = None,
    window: Window = None,
    start: Start = None,
    end: End = None,
) -> DriftReportRead:
    return await platform.monitoring.check_drift(
        model=name, version=version, window=window, start=start, end=end, trigger="manual"
    )


@router.get("/models/{name}/drift-reports", response_model=DriftReportPage)
async def drift_reports(
    name: str,
    platform: PlatformDep,
    _: Reader,
    version: Annotated[VersionNumber | None, Query(description="only this version's reports")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Offset = 0,
) -> DriftReportPage:
    return await platform.monitoring.drift_reports(model=name, version=version, limit=limit, offset=offset)


@router.get("/models/{name}/drift-reports/{report_id}", response_model=DriftReportRead)
async def drift_report(name: str, report_id: str, platform: PlatformDep, _: Reader) -> DriftReportRead:
    return await platform.monitoring.drift_report(model=name, report_id=report_id)


@router.get(
    "/models/{name}/drift-reports/{report_id}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "one panel per feature"}},
)
async def drift_plot(name: str, report_id: str, platform: PlatformDep, _: Reader) -> Response:
    png = await platform.monitoring.drift_plot(model=name, report_id=report_id)
    return Response(png, media_type="image/png")
