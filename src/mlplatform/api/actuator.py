"""Operations endpoints on Spring-actuator paths: health, liveness, readiness, info, prometheus, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

from mlplatform import errors
from mlplatform.api.body import ContractRoute
from mlplatform.api.deps import PlatformDep, require_unless_public
from mlplatform.api.responses import JsonResponse
from mlplatform.api.schemas import HealthRead, InfoRead, MetricNames, MetricRead, ProbeRead
from mlplatform.buildinfo import build_info

router = APIRouter(prefix="/actuator", tags=["actuator"], route_class=ContractRoute)


@router.get(
    "/health",
    response_model=HealthRead,
    responses={503: {"model": HealthRead, "description": "a component is DOWN"}},
)
async def health(platform: PlatformDep) -> JsonResponse:
    status, parts = await platform.health.overall()
    body = {
        "status": status,
        "components": {
            name: {"status": part.status, "details": {"latency_ms": part.latency_ms, **part.details}}
            for name, part in parts.items()
        },
    }
    return JsonResponse(body, status_code=503 if status == "DOWN" else 200)


@router.get("/health/liveness", response_model=ProbeRead)
async def liveness() -> JsonResponse:
    return JsonResponse({"status": "UP"})


@router.get(
    "/health/readiness",
    response_model=ProbeRead,
    responses={503: {"model": ProbeRead, "description": "starting, draining, or a component is DOWN"}},
)
async def readiness(platform: PlatformDep) -> JsonResponse:
    ready, reasons = await platform.health.readiness()
    if ready:
        return JsonResponse({"status": "UP"})
    return JsonResponse({"status": "OUT_OF_SERVICE", "details": reasons}, status_code=503)


@router.get("/info", response_model=InfoRead, dependencies=[require_unless_public("info")])
async def info(platform: PlatformDep) -> JsonResponse:
    settings = platform.settings
    body: dict[str, Any] = {
        "app": {
            "name": settings.management.tags.application,
            "environment": settings.management.tags.environment,
            "profile": settings.profile,
        },
        **build_info(),
        "backends": {
            "database": platform.database.backend,
            "cache": platform.cache.scheme,
            "storage": platform.artifacts.scheme,
        },
        "security": {"api_keys_enabled": settings.security.api_keys.enabled},
    }
    if not settings.security.api_keys.enabled:
        body["security"]["warning"] = (
            "API keys are disabled: every endpoint is open to anyone who can reach it"
        )
    return JsonResponse(body)


@router.get(
    "/prometheus", response_class=PlainTextResponse, dependencies=[require_unless_public("prometheus")]
)
async def prometheus(platform: PlatformDep) -> Response:
    return Response(generate_latest(platform.metrics.exposition()), media_type=CONTENT_TYPE_LATEST)


def _families(platform: PlatformDep) -> dict[str, Any]:
    return {family.name: family for family in platform.metrics.exposition().collect()}


@router.get("/metrics", response_model=MetricNames, dependencies=[require_unless_public("metrics")])
async def metric_names(platform: PlatformDep) -> JsonResponse:
    return JsonResponse({"names": sorted(_families(platform))})


_STATISTICS = {"": "VALUE", "_total": "COUNT", "_count": "COUNT", "_sum": "TOTAL", "_created": None}


@router.get("/metrics/{name}", response_model=MetricRead, dependencies=[require_unless_public("metrics")])
async def metric(
    name: str,
    platform: PlatformDep,
    tag: Annotated[list[str], Query(description="key:value filters, as in Spring")] = [],  # noqa: B006
) -> JsonResponse:
    families = _families(platform)
    family = families.get(name) or families.get(name.removesuffix("_total"))
    if family is None:
        raise errors.NotFound(f"no metric named {name!r}", details={"field": "name"})
    wanted: dict[str, str] = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep:
            raise errors.InvalidInput("tag must be key:value", details=[{"field": "tag", "problem": item}])
        wanted[key] = value
    totals: dict[str, float] = {}
    available: dict[str, set[str]] = {}
    for sample in family.samples:
        if any(sample.labels.get(k) != v for k, v in wanted.items()):
            continue
        suffix = sample.name[len(family.name) :]
        statistic = _STATISTICS.get(suffix)
        if statistic:
            totals[statistic] = totals.get(statistic, 0.0) + sample.value
        for key, value in sample.labels.items():
            if key != "le":
                available.setdefault(key, set()).add(value)
    return JsonResponse(
        {
            "name": name,
            "description": family.documentation,
            "type": family.type,
            "measurements": [{"statistic": k, "value": v} for k, v in totals.items()],
            "availableTags": [{"tag": k, "values": sorted(v)} for k, v in sorted(available.items())],
        }
    )
