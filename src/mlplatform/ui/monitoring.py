"""`/ui/monitoring`, a model's monitoring page (performance over time, drift reports) and `/ui/alerts`."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, cast, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query
from markupsafe import Markup
from pydantic import ValidationError
from starlette.responses import Response

from mlplatform.auth.schemas import Permission
from mlplatform.errors import Conflict, InvalidInput, NotFound
from mlplatform.monitoring.alerts.rules import RULE_KINDS
from mlplatform.monitoring.alerts.schemas import (
    AlertRead,
    AlertRuleCreate,
    AlertState,
    RuleSource,
    Severity,
)
from mlplatform.monitoring.schemas import (
    DriftReportRead,
    PerformanceBucket,
    PerformanceTimelineRead,
)
from mlplatform.registry.refs import check_name
from mlplatform.registry.store import ModelFilter
from mlplatform.ui import charts
from mlplatform.ui.console import PageRoute, Visit, VisitDep, redirect

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
MODELS_PER_PAGE = 100
ALERTS_PER_PAGE = 50
REPORTS_SHOWN = 20
WINDOWS = ("24h", "7d", "30d")
STATES = tuple(s.value for s in AlertState)
SEVERITIES: tuple[str, ...] = get_args(Severity)
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def one_of(value: str, allowed: tuple[str, ...], field: str) -> None:
    if value and value not in allowed:
        raise InvalidInput(
            f"{field}: {value[:32]!r} is not one of {', '.join(allowed)}",
            details=[{"field": field, "problem": f"not one of {', '.join(allowed)}"}],
        )


# --- every model ----------------------------------------------------------------------------------------


@router.get("/monitoring")
async def monitoring_page(visit: VisitDep, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    """The models of one registry page that have monitoring data: a logged prediction or an open alert."""
    platform = visit.platform
    page = await platform.registry.list_models(ModelFilter(), limit=MODELS_PER_PAGE, offset=offset)
    names = [m.name for m in page.items]
    last = await platform.monitoring.last_predictions(models=names)
    open_alerts: dict[str, list[AlertRead]] = defaultdict(list)
    for alert in await platform.alerts.open_alerts():
        if alert.model is not None:
            open_alerts[alert.model].append(alert)
    shown = [m for m in page.items if m.name in last or m.name in open_alerts]
    drift = await platform.monitoring.latest_drift_summaries(models=[m.name for m in shown])
    worst = {
        name: max((a.severity for a in alerts), key=SEVERITY_RANK.__getitem__)
        for name, alerts in open_alerts.items()
    }
    return visit.render(
        "monitoring.html",
        page=page,
        shown=shown,
        last=last,
        alerts=open_alerts,
        worst=worst,
        drift=drift,
        per_page=MODELS_PER_PAGE,
    )


# --- one model ------------------------------------------------------------------------------------------


def timeline_charts(timeline: PerformanceTimelineRead) -> list[tuple[str, Markup]]:
    """The charts of the timeline: the task's metrics, and label coverage."""
    buckets = [(b.start, b.end) for b in timeline.buckets]
    notes = [f"{b.labelled} of {b.predictions} labelled" if b.predictions else "" for b in timeline.buckets]
    found: list[tuple[str, Markup]] = []
    if timeline.task == "regression":
        series = [
            charts.Series("RMSE", [b.rmse for b in timeline.buckets]),
            charts.Series("MAE", [b.mae for b in timeline.buckets]),
        ]
        title = "RMSE and MAE of labelled predictions"
        found.append((title, charts.time_chart(title=title, buckets=buckets, series=series, notes=notes)))
    else:
        series = [
            charts.Series("accuracy", [b.accuracy for b in timeline.buckets]),
            charts.Series("macro F1", [b.f1_macro for b in timeline.buckets]),
        ]
        title = "Accuracy and macro F1 of labelled predictions"
        found.append(
            (title, charts.time_chart(title=title, buckets=buckets, series=series, top=1.0, notes=notes))
        )
    coverage = [charts.Series("label coverage", [b.label_coverage for b in timeline.buckets])]
    title = "Label coverage (labelled / predictions)"
    found.append(
        (
            title,
            charts.time_chart(
                title=title, buckets=buckets, series=coverage, top=1.0, percent=True, notes=notes
            ),
        )
    )
    return found


async def _model_page(
    visit: Visit,
    name: str,
    window: str,
    version: int | None,
    report_id: str | None,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """A model's monitoring page: its timeline over `window`, the drift report shown (`report_id`, else the
    newest), the newest reports and the model's open alerts."""
    monitoring = visit.platform.monitoring
    chosen = str(version) if version is not None else None
    timeline = await monitoring.performance_over_time(model=name, version=chosen, window=window)
    report: DriftReportRead | None
    if report_id:
        report = await monitoring.drift_report(model=name, report_id=report_id[:64])
    else:
        report = await monitoring.latest_drift_report(model=name)
    reports = await monitoring.drift_reports(model=name, limit=REPORTS_SHOWN, offset=0)
    alerts = [a for a in await visit.platform.alerts.open_alerts() if a.model == name]
    versions = await visit.platform.registry.list_versions(name, limit=100, offset=0)
    histograms = {}
    if report is not None:
        histograms = {
            f.feature: charts.drift_histogram(f.histogram, f.feature)
            for f in report.features
            if f.histogram is not None
        }
    filled: list[PerformanceBucket] = [b for b in timeline.buckets if b.predictions]
    return visit.render(
        "model_monitoring.html",
        status_code,
        name=name,
        window=window,
        version=version,
        versions=sorted((v.version for v in versions.items), reverse=True),  # the newest 100
        windows=WINDOWS,
        timeline=timeline,
        filled=filled,
        charts=timeline_charts(timeline) if filled else [],
        report=report,
        histograms=histograms,
        reports=list(reports.items),
        alerts=alerts,
        error=error,
        editor=visit.can(Permission.WRITE),
    )


@router.get("/models/{name}/monitoring")
async def model_monitoring_page(
    name: str,
    visit: VisitDep,
    window: Annotated[str, Query(max_length=16)] = "24h",
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    report: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    one_of(window, WINDOWS, "window")
    model = await visit.platform.registry.get_model(check_name(name))
    if model.default_version is None:
        raise NotFound(f"model {name!r} has no version to monitor", details={"field": "name"})
    return await _model_page(visit, name, window, version, report)


@router.post("/models/{name}/drift-check")
async def drift_check(
    name: str,
    visit: VisitDep,
    window: Annotated[str, Form(max_length=16)] = "24h",
    version: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """The monitoring service's drift check, as `POST /api/ml/models/{name}/drift-check` runs it (the
    chosen version, else the default one); no reference sample (409) shows the page again with the
    service's message."""
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    one_of(window, WINDOWS, "window")
    check_name(name)
    try:
        report = await visit.platform.monitoring.check_drift(
            model=name, version=version, window=window, trigger="manual"
        )
    except Conflict as exc:
        message = f"The drift check did not run: {exc.message}"
        return await _model_page(visit, name, window, version, None, error=message, status_code=409)
    query = urlencode({"window": window, **({"version": version} if version else {}), "report": report.id})
    return redirect(f"/ui/models/{quote(name, safe='')}/monitoring?{query}#drift-h")


# --- alerts ---------------------------------------------------------------------------------------------


def alert_filters(state: str, model: str, severity: str) -> dict[str, str]:
    """The alerts page's filters that are set, as its query (the pager keeps them on its links)."""
    return {k: v for k, v in (("state", state), ("model", model), ("severity", severity)) if v}


def alerts_location(state: str, model: str, severity: str, offset: int = 0) -> str:
    query = alert_filters(state, model, severity)
    if offset:
        query["offset"] = str(offset)
    return "/ui/alerts" + (f"?{urlencode(query)}" if query else "")


def _back_to_alerts(location: str) -> str:
    """Where an alerts form returns: the alerts page with its filters, never another page."""
    if location.startswith("/ui/alerts") and "\\" not in location and not location.startswith("/ui/alerts/"):
        return location
    return "/ui/alerts"


async def _alerts_page(
    visit: Visit,
    *,
    state: str,
    model: str,
    severity: str,
    offset: int,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """The alerts page, or its rows alone for htmx's refresh (not for a history restore, which wants the
    whole page)."""
    platform = visit.platform
    partial = visit.partial
    page = await platform.alerts.list_alerts(
        state=AlertState(state) if state else None,
        model=model or None,
        severity=cast(Severity | None, severity or None),  # checked against SEVERITIES
        limit=ALERTS_PER_PAGE,
        offset=offset,
    )
    return visit.render(
        "alerts_rows.html" if partial else "alerts.html",
        status_code,
        page=page,
        state=state,
        model=model,
        severity=severity,
        states=STATES,
        severities=SEVERITIES,
        kinds=sorted(RULE_KINDS),
        rules=[] if partial else await platform.alerts.rules(),
        api_source=RuleSource.API,
        here=alerts_location(state, model, severity, offset),
        filters=alert_filters(state, model, severity),
        per_page=ALERTS_PER_PAGE,
        form=form or {"window": "1h", "severity": "warning"},
        error=error,
        editor=visit.can(Permission.WRITE),
    )


@router.get("/alerts")
async def alerts_page(
    visit: VisitDep,
    state: Annotated[str, Query(max_length=32)] = "",
    model: Annotated[str, Query(max_length=128)] = "",
    severity: Annotated[str, Query(max_length=32)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    one_of(state, STATES, "state")
    one_of(severity, SEVERITIES, "severity")
    return await _alerts_page(visit, state=state, model=model.strip(), severity=severity, offset=offset)


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(
    alert_id: str, visit: VisitDep, back: Annotated[str, Form(max_length=512)] = "/ui/alerts"
) -> Response:
    """As `POST /api/ml/alerts/{id}/acknowledge`: the same permission (write), the same service call."""
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    await visit.platform.alerts.acknowledge(alert_id=alert_id[:64], actor=visit.actor)
    return redirect(_back_to_alerts(back))


@router.post("/alert-rules")
async def add_rule(
    visit: VisitDep,
    name: Annotated[str, Form(max_length=256)] = "",
    kind: Annotated[str, Form(max_length=64)] = "",
    threshold: Annotated[str, Form(max_length=64)] = "",
    window: Annotated[str, Form(max_length=16)] = "",
    severity: Annotated[str, Form(max_length=32)] = "",
    model: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    form = {
        "name": name,
        "kind": kind,
        "threshold": threshold,
        "window": window,
        "severity": severity,
        "model": model,
    }
    try:
        rule = AlertRuleCreate.model_validate(
            {
                "name": name.strip(),
                "kind": kind,
                "threshold": threshold.strip() or "0",
                "window": window.strip(),
                "severity": severity,
                "model": model.strip() or None,
            }
        )
        await visit.platform.alerts.add_rule(rule=rule, actor=visit.actor)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in exc.errors()[:5])
        return await _rule_refused(visit, form, message, 422)
    except (InvalidInput, Conflict) as exc:
        return await _rule_refused(visit, form, exc.message, 422 if isinstance(exc, InvalidInput) else 409)
    return redirect("/ui/alerts#rules-h")


async def _rule_refused(visit: Visit, form: dict[str, str], message: str, status_code: int) -> Response:
    return await _alerts_page(
        visit, state="", model="", severity="", offset=0, form=form, error=message, status_code=status_code
    )


@router.post("/alert-rules/{rule_id}/delete")
async def delete_rule(rule_id: str, visit: VisitDep) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    await visit.platform.alerts.delete_rule(rule_id=rule_id[:64])
    return redirect("/ui/alerts#rules-h")
