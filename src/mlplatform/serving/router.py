"""`/api/ml/predict`, `/api/ml/predict/batch` and `/api/ml/predictions` (the prediction log)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from mlplatform.api.body import body_schema, parse_body
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.responses import JsonResponse
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.errors import InvalidInput
from mlplatform.platform import Platform
from mlplatform.serving.schemas import (
    BatchRequest,
    BatchResponse,
    PredictionLogRead,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(prefix="/api/ml", tags=["serving"])
Predictor = Annotated[Principal, require(Permission.PREDICT)]
Reader = Annotated[Principal, require(Permission.READ)]


async def serve_predict(request: Request, platform: Platform) -> JsonResponse:
    """The single-prediction handler; reached through `PredictFastPath`, or FastAPI when that is bypassed."""
    body = await parse_body(request, PredictRequest)
    limits = platform.settings.security.limits
    if len(body.features) > limits.max_features:
        problem = f"at most {limits.max_features} features per row (security.limits.max-features)"
        raise InvalidInput(f"features: {problem}", details=[{"field": "features", "problem": problem}])
    # Sent as built: FastAPI's response-model pass would validate and serialise it a second time.
    return JsonResponse((await platform.serving.predict(body)).model_dump())


async def serve_batch(request: Request, platform: Platform) -> JsonResponse:
    body = await parse_body(request, BatchRequest)
    max_rows = platform.settings.security.limits.max_batch_rows
    return JsonResponse(await platform.serving.predict_batch(body, max_rows=max_rows))


# These routes document the API (OpenAPI, /docs); `PredictFastPath` answers the requests before routing.
@router.post("/predict", response_model=PredictResponse, openapi_extra=body_schema(PredictRequest))
async def predict(request: Request, platform: PlatformDep, _: Predictor) -> JsonResponse:
    return await serve_predict(request, platform)


@router.post("/predict/batch", response_model=BatchResponse, openapi_extra=body_schema(BatchRequest))
async def predict_batch(request: Request, platform: PlatformDep, _: Predictor) -> JsonResponse:
    return await serve_batch(request, platform)


@router.get("/predictions")
async def predictions(
    platform: PlatformDep,
    _: Reader,
    model: str | None = None,
    start: Annotated[datetime | None, Query(alias="from", description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="exclusive, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[PredictionLogRead]:
    return await platform.serving.logs.query(model=model, start=start, end=end, limit=limit)
