"""`/ui`: sign-in and sign-out, and the registry's pages (models, a model, a version)."""

from __future__ import annotations

import json
import re
import secrets
from typing import Annotated, cast, get_args
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from mlplatform.auth.schemas import Permission
from mlplatform.bounds import VersionNumber
from mlplatform.datasets.schemas import DatasetRead
from mlplatform.errors import DomainError, InvalidInput, NotFound
from mlplatform.platform import Platform
from mlplatform.registry.refs import check_alias, check_name
from mlplatform.registry.store import ModelFilter
from mlplatform.training.schemas import (
    TERMINAL,
    Algorithm,
    JobState,
    TrainingJobCreate,
    TrainingJobRead,
)
from mlplatform.ui import charts, lineage
from mlplatform.ui.assets import serve_asset
from mlplatform.ui.console import (
    COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_REASONS,
    PageRoute,
    Visit,
    VisitDep,
    clear_session_cookie,
    client_of,
    redirect,
    render,
    secure_cookie,
    set_session_cookie,
    status_of,
)

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
MODELS_PER_PAGE = 100
STAGES = ("staging", "production", "archived")
HISTORY_SHOWN = 100


def _next_page(requested: str | None) -> str:
    """Where to go after signing in: a console page only (never another site)."""
    if (
        requested
        and requested.startswith("/ui/")
        and not requested.startswith("/ui//")
        and "\\" not in requested
        and not any(ord(c) < 32 for c in requested)
    ):
        return requested
    return "/ui/models"


# --- signing in and out ---------------------------------------------------------------------------------


def _sign_in_page(
    request: Request, platform: Platform, next_page: str, error: str | None, status_code: int = 200
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status_code,
        next_page=next_page,
        error=error,
        token=token,
        reason=SIGN_IN_REASONS.get(request.query_params.get("reason", "")),
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(platform),
    )
    return response


@router.get("")
@router.get("/")
async def home(_: VisitDep) -> Response:
    return redirect("/ui/models")


@router.get("/login")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    platform: Platform = request.app.state.platform
    return _sign_in_page(request, platform, _next_page(next), None)


@router.post("/login")
async def sign_in(
    request: Request,
    key: Annotated[str, Form(max_length=512)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/ui/models",
) -> Response:
    platform: Platform = request.app.state.platform
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not (expected and secrets.compare_digest(expected.encode(), csrf.encode())):
        message = "the sign-in form expired or cookies are off: allow cookies for this site and try again"
        return _sign_in_page(request, platform, _next_page(next), message, 403)
    if not key.strip():
        return _sign_in_page(request, platform, _next_page(next), "key: enter an API key", 422)
    try:
        principal = await platform.auth.authenticate(key.strip(), client_of(request))
    except DomainError as exc:  # Unauthorized, or RateLimited after too many failures from this address
        return _sign_in_page(request, platform, _next_page(next), f"key: {exc.message}", status_of(exc))
    if (earlier := request.cookies.get(COOKIE)) is not None:
        await platform.sessions.end(earlier)  # signing in again replaces the session, never keeps two
    session = await platform.sessions.create(principal.key_id)
    response = redirect(_next_page(next))
    set_session_cookie(response, platform, session.id)
    response.delete_cookie(SIGN_IN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
async def sign_out(visit: VisitDep) -> Response:
    await visit.check_csrf()
    await visit.platform.sessions.end(visit.session.id)
    response = redirect("/ui/login?reason=signed-out")
    clear_session_cookie(response, visit.platform)
    return response


# --- models ---------------------------------------------------------------------------------------------


@router.get("/models")
async def models_page(
    visit: VisitDep,
    q: Annotated[str, Query(max_length=128)] = "",
    stage: Annotated[str, Query(max_length=64)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    platform = visit.platform
    if stage and stage not in STAGES:
        check_alias(stage, "stage")
    where = ModelFilter(prefix=q.strip() or None, stage=stage or None)
    page = await platform.registry.list_models(where, limit=MODELS_PER_PAGE, offset=offset)
    last = await platform.monitoring.last_predictions(models=[m.name for m in page.items])
    partial = visit.partial
    return visit.render(
        "models_rows.html" if partial else "models.html",
        page=page,
        last=last,
        q=q,
        stage=stage,
        stages=STAGES,
        per_page=MODELS_PER_PAGE,
        editor=visit.can(Permission.WRITE),
    )


@router.get("/models/{name}")
async def model_page(
    name: str, visit: VisitDep, version: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    registry = visit.platform.registry
    model = await registry.get_model(check_name(name))
    versions = await registry.list_versions(name, limit=1000, offset=0)
    history = await registry.history(name, limit=HISTORY_SHOWN, offset=0)
    shown = version or model.default_version or model.latest_version
    graph = None
    if shown is not None:
        graph = lineage.render(name, shown, await registry.lineage(name, shown))
    return visit.render(
        "model.html",
        model=model,
        versions=versions,
        history=history,
        shown=shown,
        graph=graph,
        stages=STAGES,
        editor=visit.can(Permission.WRITE),
    )


@router.post("/models/{name}/versions/{version}/stage")
async def set_stage(
    name: str, version: VersionNumber, visit: VisitDep, stage: Annotated[str, Form(max_length=32)] = ""
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    if stage not in STAGES:
        raise InvalidInput(
            f"stage: {stage!r} is not one of {', '.join(STAGES)}",
            details=[{"field": "stage", "problem": "unknown stage"}],
        )
    await visit.platform.registry.set_stage(check_name(name), version, stage, actor=visit.actor)
    return redirect(f"/ui/models/{quote(name)}")


@router.post("/models/{name}/aliases")
async def set_alias(
    name: str,
    visit: VisitDep,
    version: Annotated[int, Form(ge=1)],
    alias: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    await visit.platform.registry.set_alias(
        check_name(name), check_alias(alias.strip()), version, actor=visit.actor
    )
    return redirect(f"/ui/models/{quote(name)}")


@router.post("/models/{name}/aliases/{alias}/remove")
async def remove_alias(name: str, alias: str, visit: VisitDep) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    await visit.platform.registry.remove_alias(check_name(name), alias, actor=visit.actor)
    return redirect(f"/ui/models/{quote(name)}")


# --- a version ------------------------------------------------------------------------------------------


@router.get("/models/{name}/versions/{version}")
async def version_page(name: str, version: VersionNumber, visit: VisitDep) -> Response:
    platform = visit.platform
    found = await platform.registry.get_version(check_name(name), version)
    try:
        reference = await platform.monitoring.reference(model=name, version=version)
    except NotFound:
        reference = None
    histograms = {}
    if reference is not None:
        histograms = {f.name: charts.histogram(f.histogram, f.name) for f in reference.features}
    return visit.render("version.html", version=found, reference=reference, histograms=histograms)


@router.get("/models/{name}/versions/{version}/artifact")
async def download(name: str, version: VersionNumber, visit: VisitDep) -> Response:
    found, chunks = await visit.platform.registry.download(check_name(name), version)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{found.id}-{found.artifact.format}"',
            "Content-Length": str(found.artifact.size),
            "X-Artifact-SHA256": found.artifact.sha256,
            "Cache-Control": "no-store",
        },
    )


# --- training jobs --------------------------------------------------------------------------------------

JOBS_PER_PAGE = 100
JOB_STATES: tuple[str, ...] = get_args(JobState)
_VERSION_ID = re.compile(r"-v(\d+)-\d{14}$")


def version_href(model: str, version_id: str | None) -> str | None:
    """The console page of a version known by its full id (`NAME-vN-STAMP`)."""
    found = _VERSION_ID.search(version_id or "")
    return f"/ui/models/{quote(model, safe='')}/versions/{found.group(1)}" if found else None


def version_link(job: TrainingJobRead) -> str | None:
    """The console page of the version a succeeded job registered."""
    return version_href(job.model, job.version_id)


@router.get("/jobs")
async def jobs_page(
    visit: VisitDep,
    state: Annotated[str, Query(max_length=32)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    if state and state not in JOB_STATES:
        raise InvalidInput(
            f"state: {state[:32]!r} is not one of {', '.join(JOB_STATES)}",
            details=[{"field": "state", "problem": "unknown state"}],
        )
    page = await visit.platform.training.list_jobs(
        model=None,
        state=cast(JobState | None, state or None),  # checked against JOB_STATES above
        limit=JOBS_PER_PAGE,
        offset=offset,
    )
    partial = visit.partial
    return visit.render(
        "jobs_rows.html" if partial else "jobs.html",
        page=page,
        state=state,
        states=JOB_STATES,
        per_page=JOBS_PER_PAGE,
        live=any(j.state not in TERMINAL for j in page.items),
        links={j.id: version_link(j) for j in page.items},
        editor=visit.can(Permission.WRITE),
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: str, visit: VisitDep, back: Annotated[str, Form(max_length=16)] = "jobs"
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    job = await visit.platform.training.cancel(job_id[:64], actor=visit.actor)
    # From the job's own page (`back=job`), back to it; from the list, to the list.
    return redirect(f"/ui/jobs/{quote(job.id, safe='')}" if back == "job" else "/ui/jobs")


# --- datasets -------------------------------------------------------------------------------------------

DATASETS_PER_PAGE = 100
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
MAX_HYPERPARAMETER_LINES = 100


def parse_hyperparameters(text: str) -> dict[str, object]:
    """`key=value` lines (blank lines and `#` comments skipped); a value is JSON when it parses as JSON
    (numbers, true/false, null, lists), else the text itself."""
    found: dict[str, object] = {}
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) > MAX_HYPERPARAMETER_LINES:
        raise InvalidInput(f"hyperparameters: at most {MAX_HYPERPARAMETER_LINES} lines")
    for number, line in enumerate(lines, 1):
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise InvalidInput(
                f"hyperparameters: line {number} ({line[:60]!r}) is not key=value",
                details=[{"field": "hyperparameters", "problem": "a line is not key=value"}],
            )
        if key in found:
            raise InvalidInput(f"hyperparameters: {key[:60]!r} is given twice")
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in exc.errors()[:5])


@router.get("/datasets")
async def datasets_page(visit: VisitDep, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    page = await visit.platform.datasets.list_datasets(name=None, limit=DATASETS_PER_PAGE, offset=offset)
    return visit.render(
        "datasets.html", page=page, per_page=DATASETS_PER_PAGE, editor=visit.can(Permission.WRITE)
    )


def _dataset_page(
    visit: Visit, dataset: DatasetRead, form: dict[str, str], error: str | None, status_code: int = 200
) -> Response:
    return visit.render(
        "dataset.html",
        status_code,
        dataset=dataset,
        form=form,
        error=error,
        algorithms=ALGORITHMS,
        editor=visit.can(Permission.WRITE),
    )


@router.get("/datasets/{dataset_id}")
async def dataset_page(dataset_id: str, visit: VisitDep) -> Response:
    dataset = await visit.platform.datasets.get(dataset_id[:64])
    form = {"model": dataset.name, "target": dataset.columns[-1].name if dataset.columns else ""}
    return _dataset_page(visit, dataset, form, None)


@router.post("/datasets/{dataset_id}/train")
async def train(
    dataset_id: str,
    visit: VisitDep,
    model: Annotated[str, Form(max_length=256)] = "",
    target: Annotated[str, Form(max_length=256)] = "",
    algorithm: Annotated[str, Form(max_length=64)] = "",
    hyperparameters: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    platform = visit.platform
    dataset = await platform.datasets.get(dataset_id[:64])
    form = {"model": model, "target": target, "algorithm": algorithm, "hyperparameters": hyperparameters}
    try:
        request = TrainingJobCreate.model_validate(
            {
                "model": model.strip(),
                "dataset": dataset.id,
                "target": target,
                "algorithm": algorithm,
                "hyperparameters": parse_hyperparameters(hyperparameters),
            }
        )
        await platform.training.submit(request, actor=visit.actor)
    except ValidationError as exc:
        return _dataset_page(visit, dataset, form, _validation_message(exc), 422)
    except InvalidInput as exc:
        return _dataset_page(visit, dataset, form, exc.message, 422)
    return redirect("/ui/jobs")


# --- static files (public: the sign-in page needs them) -----------------------------------------------------


@router.get("/static/{path:path}")
async def static(path: str, request: Request) -> Response:
    return serve_asset(request, path)
