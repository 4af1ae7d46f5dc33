"""`/ui/serving`: every model's traffic over a window, and a model's requests, errors and latency percentiles
over time (uPlot, refreshed live) with its recent predictions and their feedback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from mlplatform.errors import InvalidInput
from mlplatform.registry.refs import check_name
from mlplatform.registry.store import ModelFilter
from mlplatform.serving.schemas import ServingStatsRead
from mlplatform.ui.console import PageRoute, Visit, VisitDep

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
WINDOWS = ("15m", "1h", "6h", "24h", "7d")
MODELS_PER_PAGE = 100
RECENT_SHOWN = 20
INPUTS_SHOWN = 4
Window = Annotated[str, Query(max_length=8)]


def _window(window: str) -> str:
    if window not in WINDOWS:
        raise InvalidInput(
            f"window: {window[:8]!r} is not one of {', '.join(WINDOWS)}",
            details=[{"field": "window", "problem": "unknown window"}],
        )
    return window


def chart_data(stats: ServingStatsRead) -> dict[str, Any]:
    """The series as uPlot draws it: x in epoch seconds, then one array per line (null: no requests)."""
    points = stats.points
    return {
        "step": stats.step_seconds,
        "t": [int(p.at.timestamp()) for p in points],
        "predictions": [p.predictions for p in points],
        "errors": [p.errors for p in points],
        "p50": [p.p50 for p in points],
        "p95": [p.p95 for p in points],
        "p99": [p.p99 for p in points],
    }


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)[:40]


def inputs_summary(values: list[Any], names: tuple[str, ...]) -> str:
    """The first few inputs, by feature name when the version is known (`amount=12.5, age=41, … (6 more)`)."""
    shown = [
        f"{names[i]}={_shown(value)}" if i < len(names) else _shown(value)
        for i, value in enumerate(values[:INPUTS_SHOWN])
    ]
    more = len(values) - INPUTS_SHOWN
    return ", ".join(shown) + (f", … ({more} more)" if more > 0 else "")


@router.get("/serving")
async def serving_page(
    visit: VisitDep, window: Window = "1h", offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
) -> Response:
    platform = visit.platform
    page = await platform.registry.list_models(ModelFilter(), limit=MODELS_PER_PAGE, offset=offset)
    start, end, found = await platform.serving_stats.overview(
        models=[m.name for m in page.items], window=_window(window)
    )
    return visit.render(
        "serving_rows.html" if visit.partial else "serving.html",
        page=page,
        stats=found,
        window=window,
        windows=WINDOWS,
        start=start,
        end=end,
        per_page=MODELS_PER_PAGE,
    )


async def _model_context(visit: Visit, name: str, window: str) -> dict[str, Any]:
    platform = visit.platform
    stats = await platform.serving_stats.series(model=check_name(name), window=_window(window))
    recent = await platform.serving_stats.recent(model=name, limit=RECENT_SHOWN)
    return {
        "name": name,
        "stats": stats,
        "chart": chart_data(stats),
        "recent": recent,
        "inputs": [inputs_summary(r.prediction.inputs, r.features) for r in recent],
        "window": window,
        "windows": WINDOWS,
    }


@router.get("/serving/{name}")
async def serving_model_page(name: str, visit: VisitDep, window: Window = "1h") -> Response:
    context = await _model_context(visit, name, window)
    return visit.render("serving_live.html" if visit.partial else "serving_model.html", **context)
