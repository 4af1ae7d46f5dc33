"""`/ui/experiments`: the experiments, and one experiment's results (intervals, the always-valid test of each
difference, the recommendation) with Promote and Stop for the roles the API lets do them."""

from __future__ import annotations

from typing import Annotated, cast, get_args
from urllib.parse import quote

from fastapi import APIRouter, Form, Query
from markupsafe import Markup
from starlette.responses import Response

from mlplatform.auth.schemas import Permission
from mlplatform.errors import Conflict, InvalidInput
from mlplatform.experiments.schemas import (
    HIGHER_IS_BETTER,
    Estimate,
    ExperimentResults,
    ExperimentState,
)
from mlplatform.registry.refs import check_name
from mlplatform.ui import charts
from mlplatform.ui.console import PageRoute, Visit, VisitDep, redirect
from mlplatform.ui.router import version_href

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
EXPERIMENTS_PER_PAGE = 100
EXPERIMENT_STATES: tuple[str, ...] = get_args(ExperimentState)
KINDS = {"ab": "A/B test", "canary": "canary", "shadow": "shadow"}
LATENCIES = ("p50", "p95", "p99")
MAX_REASON = 500


def plots(results: ExperimentResults) -> list[tuple[str, str, Markup]]:
    """(heading, what it shows, SVG) per metric: each variant's estimate and interval, and the always-valid
    interval of each variant's difference from the control."""
    found: list[tuple[str, str, Markup]] = []
    variants = results.variants

    def estimate_plot(heading: str, note: str, estimates: list[Estimate | None]) -> None:
        rows: list[charts.Interval] = [
            (v.name, None, None, None) if e is None else (v.name, e.value, e.low, e.high)
            for v, e in zip(variants, estimates, strict=True)
        ]
        if any(r[1] is not None for r in rows):
            found.append((heading, note, charts.forest(heading, rows)))

    level = f"{(1 - results.alpha) * 100:g} %"
    estimate_plot("error rate", f"failed requests' share, {level} interval", [v.error_rate for v in variants])
    for metric in sorted({m for v in variants for m in v.metrics}):
        labelled = [v.metrics.get(metric) for v in variants]
        estimate_plot(metric, f"from feedback labels, {level} interval", labelled)
    for p in LATENCIES:
        estimate_plot(f"latency {p} (ms)", f"{level} interval", [v.latency_ms.get(p) for v in variants])
    if any(v.agreement is not None for v in variants):
        note = "the shadow's answers equal to the answer given"
        estimate_plot("agreement", note, [v.agreement for v in variants])
    if results.comparisons:
        rows: list[charts.Interval] = [
            (f"{c.variant} − {c.control}", c.difference, c.interval.low, c.interval.high)
            for c in results.comparisons
        ]
        heading = f"difference in {results.metric}"
        note = "always-valid confidence sequence: may be looked at any time"
        found.append((heading, note, charts.forest(heading, rows, zero=True)))
    return found


def recommendation_words(results: ExperimentResults, *, running: bool) -> str:
    """The service's recommendation as advice while the experiment runs, as a finding once it has ended."""
    if results.recommendation == "winner" and results.winner is not None:
        direction = "higher" if HIGHER_IS_BETTER.get(results.metric, True) else "lower"
        best = f"the best variant on {results.metric} ({direction} is better)"
        return f"Promote {results.winner}: {best}." if running else f"{results.winner} was {best}."
    if results.recommendation == "no_detectable_difference":
        if running:
            return "Stop, or promote either: no variant differs enough to matter."
        return "No variant differed enough to matter."
    if not running:
        return "Undecided: it ended before the data told the variants apart."
    more = f" About {results.more_samples} more observations per variant." if results.more_samples else ""
    return f"Keep running: no decision yet.{more}"


async def render_experiment(
    visit: Visit, experiment_id: str, error: str | None = None, status_code: int = 200
) -> Response:
    service = visit.platform.experiments
    experiment = await service.get(experiment_id[:64])
    results = await service.results(experiment.id)
    partial = visit.partial
    return visit.render(
        "experiment_results.html" if partial else "experiment.html",
        status_code,
        experiment=experiment,
        results=results,
        plots=plots(results),
        advice=recommendation_words(results, running=experiment.state == "running"),
        kinds=KINDS,
        latencies=LATENCIES,
        version_href=version_href,
        error=error,
        editor=visit.can(Permission.WRITE),
    )


@router.get("/experiments")
async def experiments_page(
    visit: VisitDep,
    state: Annotated[str, Query(max_length=32)] = "",
    model: Annotated[str, Query(max_length=128)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    model = model.strip()
    if model:
        check_name(model, "model")
    if state and state not in EXPERIMENT_STATES:
        raise InvalidInput(
            f"state: {state[:32]!r} is not one of {', '.join(EXPERIMENT_STATES)}",
            details=[{"field": "state", "problem": "unknown state"}],
        )
    page = await visit.platform.experiments.list_experiments(
        model=model or None,
        state=cast(ExperimentState | None, state or None),  # checked against EXPERIMENT_STATES above
        limit=EXPERIMENTS_PER_PAGE,
        offset=offset,
    )
    return visit.render(
        "experiments.html",
        page=page,
        state=state,
        model=model,
        states=EXPERIMENT_STATES,
        kinds=KINDS,
        per_page=EXPERIMENTS_PER_PAGE,
    )


@router.get("/experiments/{experiment_id}")
async def experiment_page(experiment_id: str, visit: VisitDep) -> Response:
    return await render_experiment(visit, experiment_id)


@router.post("/experiments/{experiment_id}/promote")
async def promote(
    experiment_id: str, visit: VisitDep, variant: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)  # as POST /api/ml/experiments/{id}/promote
    try:
        await visit.platform.experiments.promote(
            experiment_id[:64], variant=variant.strip() or None, actor=visit.actor
        )
    except Conflict as exc:
        return await render_experiment(visit, experiment_id, exc.message, 409)
    except InvalidInput as exc:
        return await render_experiment(visit, experiment_id, exc.message, 422)
    return _back(experiment_id)


@router.post("/experiments/{experiment_id}/stop")
async def stop(
    experiment_id: str, visit: VisitDep, reason: Annotated[str, Form(max_length=MAX_REASON)] = ""
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)  # as POST /api/ml/experiments/{id}/stop
    try:
        await visit.platform.experiments.stop(
            experiment_id[:64], actor=visit.actor, reason=reason.strip() or None
        )
    except Conflict as exc:
        return await render_experiment(visit, experiment_id, exc.message, 409)
    return _back(experiment_id)


def _back(experiment_id: str) -> Response:
    return redirect(f"/ui/experiments/{quote(experiment_id, safe='')}")
