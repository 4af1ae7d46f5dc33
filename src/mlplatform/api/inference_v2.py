"""Open Inference Protocol V2 (KServe, Triton and MLServer clients), JSON and binary tensors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from mlplatform import __version__
from mlplatform.api.body import ContractRoute, body_schema, inline_schema
from mlplatform.api.deps import PlatformDep, require
from mlplatform.api.responses import JsonResponse, Reply
from mlplatform.api.schemas import (
    V2InferenceRequest,
    V2InferenceResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
)
from mlplatform.auth.schemas import Permission, Principal
from mlplatform.errors import InvalidInput
from mlplatform.platform import Platform
from mlplatform.registry.snapshot import VersionEntry
from mlplatform.serving.schemas import REQUEST_ID_LENGTH
from mlplatform.serving.service import Header
from mlplatform.serving.v2_codec import (
    FEATURE_TYPES,
    HEADER_LENGTH,
    declared_outputs,
    decode_inputs,
    encode_outputs,
    output_tensor,
    requested,
    split_body,
    to_matrix,
)

router = APIRouter(prefix="/v2", tags=["inference v2"], route_class=ContractRoute)
health = APIRouter(prefix="/v2", tags=["inference v2"])
Reader = Annotated[Principal, require(Permission.READ)]
Predictor = Annotated[Principal, require(Permission.PREDICT)]
Version = Annotated[str, Path(max_length=20, description="a version number: 1, 2, …")]


def _check_version(version: str | None) -> None:
    if version is not None and (not version.isdecimal() or not version.isascii()):
        problem = f"{version[:40]!r} is not a version number"
        raise InvalidInput(f"version: {problem}", details=[{"field": "version", "problem": problem}])


def _resolve(platform: Platform, model: str, version: str | None) -> VersionEntry:
    _check_version(version)
    return platform.registry.resolve(model if version is None else f"{model}/{version}")


def _request_id(value: Any) -> str | None:
    """The request's `id`, logged as its request_id: a column of `REQUEST_ID_LENGTH` characters, no NUL (one
    that does not fit would fail the write of the whole block of prediction logs)."""
    if not isinstance(value, str):
        return None
    if len(value) > REQUEST_ID_LENGTH or "\x00" in value:
        problem = f"at most {REQUEST_ID_LENGTH} characters, no NUL"
        raise InvalidInput(f"id: {problem}", details=[{"field": "id", "problem": problem}])
    return value


def _metadata(entry: VersionEntry) -> dict[str, Any]:
    features = entry.description.features
    numeric = all(FEATURE_TYPES[f.type] != "BYTES" for f in features)
    inputs = [{"name": "input-0", "datatype": "FP64" if numeric else "BYTES", "shape": [-1, len(features)]}]
    inputs += [{"name": f.name, "datatype": FEATURE_TYPES[f.type], "shape": [-1]} for f in features]
    outputs = [
        {"name": name, "datatype": datatype, "shape": shape}
        for name, (datatype, shape) in declared_outputs(entry.description).items()
    ]
    return {
        "name": entry.name,
        "versions": [str(entry.version)],
        "platform": f"mlplatform-{entry.description.framework.value}",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "id": entry.id,
            "features": [f.name for f in features],
            "classes": entry.description.classes,
        },
    }


@health.get("/health/live", response_model=V2Live)
async def live() -> JsonResponse:
    return JsonResponse({"live": True})


@health.get(
    "/health/ready",
    response_model=V2Ready,
    responses={503: {"model": V2Ready, "description": "not ready: starting, draining or a backend is down"}},
)
async def ready(platform: PlatformDep) -> JsonResponse:
    is_ready, _ = await platform.health.readiness()
    return JsonResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("", response_model=V2ServerMetadata)
async def server_metadata(_: Reader) -> JsonResponse:
    return JsonResponse({"name": "mlplatform", "version": __version__, "extensions": ["binary_tensor_data"]})


# Each route exists with and without a version; separate functions, so neither documents the other's
# parameters (one function under both would offer `?version=` on the unversioned path).
@router.get("/models/{model}", response_model=V2ModelMetadata)
async def model_metadata(model: str, platform: PlatformDep, _: Reader) -> JsonResponse:
    return JsonResponse(_metadata(_resolve(platform, model, None)))


@router.get("/models/{model}/versions/{version}", response_model=V2ModelMetadata)
async def version_metadata(model: str, version: Version, platform: PlatformDep, _: Reader) -> JsonResponse:
    return JsonResponse(_metadata(_resolve(platform, model, version)))


async def _ready(platform: Platform, model: str, version: str | None) -> JsonResponse:
    entry = _resolve(platform, model, version)
    await platform.serving.loaded(entry)
    return JsonResponse({"name": entry.name, "ready": True})


@router.get("/models/{model}/ready", response_model=V2ModelReady)
async def model_ready(model: str, platform: PlatformDep, _: Reader) -> JsonResponse:
    return await _ready(platform, model, None)


@router.get("/models/{model}/versions/{version}/ready", response_model=V2ModelReady)
async def version_ready(model: str, version: Version, platform: PlatformDep, _: Reader) -> JsonResponse:
    return await _ready(platform, model, version)


INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs; binary outputs (binary_data) follow the JSON header, whose length is in "
        "Inference-Header-Content-Length",
        "content": {
            "application/json": {"schema": inline_schema(V2InferenceResponse)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_BODY = body_schema(
    V2InferenceRequest,
    "JSON; with the binary tensor extension, binary inputs follow the JSON header, whose length is in "
    "Inference-Header-Content-Length",
)


@router.post(
    "/models/{model}/infer", response_class=Response, responses=INFER_RESPONSES, openapi_extra=INFER_BODY
)
async def infer(model: str, request: Request, platform: PlatformDep, _: Predictor) -> Response:
    reply = await serve_infer(
        await request.body(), request.headers.get(HEADER_LENGTH), platform, model, None, request.headers.get
    )
    return reply.response()


@router.post(
    "/models/{model}/versions/{version}/infer",
    response_class=Response,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_BODY,
)
async def infer_version(
    model: str, version: Version, request: Request, platform: PlatformDep, _: Predictor
) -> Response:
    reply = await serve_infer(
        await request.body(),
        request.headers.get(HEADER_LENGTH),
        platform,
        model,
        version,
        request.headers.get,
    )
    return reply.response()


async def serve_infer(
    body: bytes,
    header_length: str | None,
    platform: Platform,
    model: str,
    version: str | None,
    headers: Header | None = None,
) -> Reply:
    """The infer handler; run by `api.edge` for every infer request (the route above documents it)."""
    header, binary = split_body(body, header_length)
    request_id = _request_id(header.get("id"))
    _check_version(version)
    entry, arm, route = platform.serving.route_infer(model, version, request_id, headers)
    loaded = await platform.serving.loaded(entry)
    matrix = to_matrix(decode_inputs(header, binary), loaded.signature)
    max_rows = platform.settings.security.limits.max_batch_rows
    if len(matrix) > max_rows:
        problem = f"{len(matrix)} rows; at most {max_rows} per request (security.limits.max-batch-rows)"
        raise InvalidInput(f"inputs: {problem}", details=[{"field": "inputs", "problem": problem}])
    declared = declared_outputs(entry.description)
    wanted, binary_names = requested(header, list(declared))  # checked before the model runs
    raw = await platform.serving.infer(entry, loaded, matrix, request_id, arm, route, headers)
    available = {"predict": raw.values, "predict_proba": raw.probabilities}
    tensors = [
        output_tensor(name, values, declared[name][0])
        for name in wanted
        if (values := available[name]) is not None
    ]
    response: dict[str, Any] = {"model_name": entry.name, "model_version": str(entry.version)}
    if request_id is not None:
        response["id"] = request_id
    content, json_length = encode_outputs(response, tensors, binary_names)
    if json_length is None:
        return Reply(content, "application/json")
    return Reply(content, "application/octet-stream", {HEADER_LENGTH: str(json_length)})
