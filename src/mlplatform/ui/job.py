"""`/ui/jobs/{id}`: one training job: what it trains on and with, its live state and progress, metrics,
timings per phase, the version it registered, and a search job's trials (a table and a chart)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from mlplatform.auth.schemas import Permission
from mlplatform.training.schemas import TERMINAL
from mlplatform.training.search import DEFAULT_METRIC
from mlplatform.ui import charts
from mlplatform.ui.console import PageRoute, VisitDep
from mlplatform.ui.router import version_link

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
# The phases a job's `timings` may hold, in the order they run (the service documents them).
PHASES = ("read", "fit", "evaluate", "save", "register")


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, visit: VisitDep) -> Response:
    training = visit.platform.training
    job = await training.get(job_id[:64])
    trials = await training.trials(job.id) if job.search is not None else []
    # The metric the search ranks trials by, as the training service picks it.
    metric = (job.search.metric or DEFAULT_METRIC[job.task]) if job.search is not None else None
    best = next((t.number for t in trials if t.best), None)
    chart = charts.trial_values(
        [(t.number, t.value) for t in trials if t.value is not None], best, metric or "search metric"
    )
    phases = [p for p in PHASES if p in job.timings] + sorted(set(job.timings) - set(PHASES))
    partial = visit.partial
    return visit.render(
        "job_live.html" if partial else "job.html",
        job=job,
        live=job.state not in TERMINAL,
        version_href=version_link(job),
        trials=trials,
        best=best,
        metric=metric,
        chart=chart,
        phases=phases,
        editor=visit.can(Permission.WRITE),
    )
