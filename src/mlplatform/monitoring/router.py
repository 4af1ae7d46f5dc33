"""`/api/ml/feedback` and `/api/ml/models/{name}/monitoring`: actual values in, performance out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from mlplatform.api.body import loads, validate
from mlplatform.api.deps import PlatformDep, require
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.errors import PayloadTooLarge
from mlplatform.monitoring.schemas import (
    FEEDBACK_MAX_ITEMS,
    FeedbackCreate,
    FeedbackHistoryRead,
    FeedbackList,
    FeedbackResult,
    PerformanceRead,
)

router = APIRouter(prefix="/api/ml", tags=["monitoring"])
Predictor = Annotated[Principal, require(Permission.PREDICT)]
Reader = Annotated[Principal, require(Permission.READ)]
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
    window: Annotated[str | None, Query(description="1h, 24h (default), 7d, …; ignored with from")] = None,
    start: Annotated[datetime | None, Query(alias="from", description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="exclusive, ISO 8601; default now")] = None,
    version: Annotated[str | None, Query(description="a version number or full id; default: all")] = None,
) -> PerformanceRead:
    return await platform.monitoring.performance(
        model=name, version=version, window=window, start=start, end=end
    )
