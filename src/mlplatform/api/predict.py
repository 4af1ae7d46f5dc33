"""`/api/ml/predict`, `/api/ml/predict/batch`, `/api/ml/predictions` (the prediction log) and a model's
`serving-stats`: the HTTP edge of the serving domain, which knows no HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from mlplatform.api.body import ContractRoute, body_schema, decode, loads, validate
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.responses import JsonResponse
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.bounds import Text
from mlplatform.errors import InvalidInput
from mlplatform.platform import Platform
from mlplatform.registry.refs import check_name
from mlplatform.serving.schemas import (
    REQUEST_ID_LENGTH,
    BatchRequest,
    BatchResponse,
    PredictInput,
    PredictionLogRead,
    PredictRequest,
    PredictResponse,
    ServingStatsRead,
)
from mlplatform.serving.service import Header

router = APIRouter(prefix="/api/ml", tags=["serving"], route_class=ContractRoute)
Predictor = Annotated[Principal, require(Permission.PREDICT)]
Reader = Annotated[Principal, require(Permission.READ)]
_PREDICT_FIELDS = frozenset(PredictRequest.model_fields)


def predict_input(body: bytes) -> PredictInput:
    """Most bodies are plainly valid and skip the schema's validation pass; any other goes through it, for
    the exact 422."""
    data = loads(body)
    if (
        type(data) is dict
        and data.keys() <= _PREDICT_FIELDS
        and type(data.get("model")) is str
        and type(data.get("features")) in (dict, list)
    ):
        request_id = data.get("request_id")
        if request_id is None or (
            type(request_id) is str and len(request_id) <= REQUEST_ID_LENGTH and "\x00" not in request_id
        ):
            return PredictInput(data["model"], data["features"], request_id)
    request = validate(data, PredictRequest)
    return PredictInput(request.model, request.features, request.request_id)


async def serve_predict(body: bytes, platform: Platform, header: Header | None = None) -> dict[str, Any]:
    """The single-prediction handler, as plain data; run by `api.edge` for every prediction request."""
    request = predict_input(body)
    limits = platform.settings.security.limits
    if len(request.features) > limits.max_features:
        problem = f"at most {limits.max_features} features per row (security.limits.max-features)"
        raise InvalidInput(f"features: {problem}", details=[{"field": "features", "problem": problem}])
    return await platform.serving.predict(request, header)


async def serve_batch(body: bytes, platform: Platform, header: Header | None = None) -> dict[str, Any]:
    request = decode(body, BatchRequest)
    max_rows = platform.settings.security.limits.max_batch_rows
    return await platform.serving.predict_batch(request, max_rows=max_rows, header=header)


# `api.edge` answers these two paths itself, before routing, with the same handlers: these routes declare the
# operations (OpenAPI, /docs; the pipeline's route walk) and behave the same if a request ever reaches them.
# The data is sent as built: a response-model pass would validate and serialise it again.
@router.post("/predict", response_model=PredictResponse, openapi_extra=body_schema(PredictRequest))
async def predict(request: Request, platform: PlatformDep, _: Predictor) -> JsonResponse:
    return JsonResponse(await serve_predict(await request.body(), platform, request.headers.get))


@router.post("/predict/batch", response_model=BatchResponse, openapi_extra=body_schema(BatchRequest))
async def predict_batch(request: Request, platform: PlatformDep, _: Predictor) -> JsonResponse:
    return JsonResponse(await serve_batch(await request.body(), platform, request.headers.get))


@router.get("/predictions")
async def predictions(
    platform: PlatformDep,
    _: Reader,
    model: Text | None = None,
    version: Annotated[
        Text | None, Query(description="a version's full id, or its number together with model")
    ] = None,
    request_id: Annotated[Text | None, Query(description="the request_id a client gave")] = None,
    start: Annotated[datetime | None, Query(alias="from", description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="exclusive, ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[PredictionLogRead]:
    if version is not None and model is not None and version.isdecimal():
        version = platform.registry.resolve(f"{model}/{version}", "version").id
    return await platform.serving.logs.query(
        model=model, version=version, request_id=request_id, start=start, end=end, limit=limit
    )


@router.get("/models/{name}/serving-stats", response_model=ServingStatsRead)
async def serving_stats(
    name: str,
    platform: PlatformDep,
    _: Reader,
    window: Annotated[
        str | None, Query(description="15m, 1h (default), 24h, 7d, …; ignored with from")
    ] = None,
    start: Annotated[datetime | None, Query(alias="from", description="inclusive, ISO 8601")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="exclusive, ISO 8601; default now")] = None,
) -> ServingStatsRead:
    """Predictions, requests, errors and latency percentiles per step (1 minute up to a day, at most 240
    points), every server process's counts added up."""
    return await platform.serving_stats.series(model=check_name(name), window=window, start=start, end=end)
