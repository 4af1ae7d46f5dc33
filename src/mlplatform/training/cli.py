"""`mlplatform train` (live progress; Ctrl-C offers to cancel); `mlplatform jobs list|show|trials|cancel`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlplatform.cliutil import DEFAULT_URL, Key, Url, call_server, fail

jobs_app = typer.Typer(
    help="Follow, list and cancel training jobs on a running server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
errors = Console(stderr=True)
FINISHED = ("succeeded", "failed", "cancelled")
INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def _pairs(pairs: list[str], option: str, parse: bool) -> dict[str, Any]:
    """`key=value` options; with `parse`, values that read as JSON (numbers, true, null, lists) are typed."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"error: {option} {pair!r}: expected key=value")
        if parse:
            try:
                found[key] = json.loads(value)
            except ValueError:
                found[key] = value
        else:
            found[key] = value
    return found


def _search(value: str | None) -> dict[str, Any] | None:
    """`--search` takes JSON, or @FILE holding JSON."""
    if value is None:
        return None
    try:
        text = open(value[1:], encoding="utf-8").read() if value.startswith("@") else value  # noqa: SIM115
        found = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"error: --search: {exc}")
    if not isinstance(found, dict):
        fail("error: --search: expected a JSON object")
    return found


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _describe(job: dict[str, Any]) -> dict[str, Any]:
    """The progress bar's text fields for one reading of the job."""
    progress = job.get("progress") or {}
    current, total = progress.get("current"), progress.get("total")
    unit = progress.get("unit") or ""
    steps = f"{unit} {current}/{total}" if current is not None and total else job["state"]
    metric = progress.get("metric")
    shown = f"{progress.get('metric_name') or 'metric'} {_fmt(metric)}" if metric is not None else ""
    eta = progress.get("eta_seconds")
    left = f"ETA {eta:.0f}s" if eta is not None and job["state"] == "running" else ""
    attempt = f"attempt {job['attempt']}" if job.get("attempt", 0) > 1 else ""
    return {"steps": steps, "metric": shown, "eta": " ".join(p for p in (left, attempt) if p)}


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[metric]}"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _show_update(progress: Progress, task: TaskID, job: dict[str, Any]) -> None:
    fraction = float((job.get("progress") or {}).get("fraction") or 0.0)
    progress.update(task, completed=fraction * 100, **_describe(job))


def follow(url: str, key: str | None, job: dict[str, Any]) -> dict[str, Any]:
    """Follow a job to its end with a progress bar. Ctrl-C asks whether to cancel the job or leave it
    running; a second Ctrl-C leaves at once."""
    job_id = job["id"]
    with _bar() as progress:
        task = progress.add_task(f"{job['algorithm']} → {job['model']}", total=100, **_describe(job))
        try:
            return call_server(
                url, key, lambda c: c.follow_training_job(job_id, lambda j: _show_update(progress, task, j))
            )
        except KeyboardInterrupt:
            progress.stop()
    try:
        cancel = typer.confirm(f"\ncancel training job {job_id}?", default=False, err=True)
    except (KeyboardInterrupt, typer.Abort):
        cancel = False
    if not cancel:
        errors.print(f"job {job_id} keeps running; follow it with: mlplatform jobs show {job_id} --follow")
        raise typer.Exit(INTERRUPTED)
    call_server(url, key, lambda c: c.cancel_training_job(job_id))
    errors.print(f"cancelling job {job_id} …")
    try:
        return call_server(url, key, lambda c: c.follow_training_job(job_id, poll_seconds=0.25))
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None


def _report(job: dict[str, Any]) -> None:
    """The outcome of a followed job; the exit code is 1 unless it succeeded."""
    if job["state"] == "succeeded":
        console.print(f"[green]succeeded[/]: registered [bold]{escape(str(job['version_id']))}[/]")
        console.print(_metrics_table(job["metrics"]))
        return
    console.print(f"[red]{job['state']}[/]" + (f": {escape(job['error'])}" if job.get("error") else ""))
    raise typer.Exit(1)


def _metrics_table(metrics: dict[str, float]) -> Table:
    table = Table(title="validation metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}")
    return table


def _jobs_table(jobs: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("id", "model", "algorithm", "state", "progress", "attempt", "version", "created", "by"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j["id"],
            escape(j["model"]),
            j["algorithm"],
            j["state"],
            f"{100 * float((j.get('progress') or {}).get('fraction') or 0):.0f}%",
            str(j["attempt"]),
            escape(j["version_id"] or "-"),
            j["created_at"][:19],
            escape(j["created_by"]),
        )
    return table


def train(
    dataset: Annotated[str, typer.Option("--dataset", help="the dataset id")],
    target: Annotated[str, typer.Option("--target", help="the column to predict")],
    algorithm: Annotated[str, typer.Option("--algorithm", help="random_forest, xgboost, lightgbm, …")],
    model: Annotated[str, typer.Option("--model", help="the model name to register the version under")],
    param: Annotated[list[str] | None, typer.Option("--param", help="a hyperparameter k=v; repeat")] = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", help="a feature column (default: every other); repeat")
    ] = None,
    task: Annotated[str | None, typer.Option(help="classification or regression (default: inferred)")] = None,
    validation_fraction: Annotated[float | None, typer.Option(help="share of rows held out (0.2)")] = None,
    validation_dataset: Annotated[str | None, typer.Option(help="a dataset id to validate on")] = None,
    parent: Annotated[str | None, typer.Option(help="the version this one derives from")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="key=value; repeat")] = None,
    search: Annotated[str | None, typer.Option(help="a search spec as JSON, or @FILE")] = None,
    seed: Annotated[
        int | None, typer.Option(help="seeds the split and the estimator's random_state (default 0)")
    ] = None,
    follow_job: Annotated[bool, typer.Option("--follow", help="show progress until the job ends")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Train a model on a dataset on the server's Dask cluster and register the result as a new version."""
    body: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "target": target,
        "algorithm": algorithm,
        "hyperparameters": _pairs(param or [], "--param", parse=True),
        "tags": _pairs(tag or [], "--tag", parse=False),
    }
    if feature:
        body["features"] = [name for item in feature for name in item.split(",") if name]
    if task is not None:
        body["task"] = task
    validation = {"fraction": validation_fraction, "dataset": validation_dataset}
    if any(v is not None for v in validation.values()):
        body["validation"] = {k: v for k, v in validation.items() if v is not None}
    if parent is not None:
        body["parent"] = parent
    if seed is not None:
        body["seed"] = seed
    if (spec := _search(search)) is not None:
        body["search"] = spec
    job = call_server(url, key, lambda c: c.submit_training_job(**body))
    console.print(f"queued training job [bold]{job['id']}[/] ({job['algorithm']}, {job['task']})")
    if not follow_job:
        console.print(f"follow it with: mlplatform jobs show {job['id']} --follow")
        return
    _report(follow(url, key, job))


@jobs_app.command("list")
def list_jobs(
    model: Annotated[str | None, typer.Option(help="only this model's jobs")] = None,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")] = None,
    limit: int = 100,
    offset: int = 0,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List training jobs, newest first."""
    page = call_server(url, key, lambda c: c.training_jobs(model, state, limit, offset))
    console.print(_jobs_table(page["items"], title=f"{page['total']} training jobs"))


@jobs_app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow_job: Annotated[bool, typer.Option("--follow", help="show progress until the job ends")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show a training job: its parameters, progress, metrics and outcome."""
    job = call_server(url, key, lambda c: c.training_job(job_id))
    if follow_job and job["state"] not in FINISHED:
        job = follow(url, key, job)
    console.print(_jobs_table([job]))
    console.print(f"dataset {job['dataset']}  target {escape(job['target'])}  task {job['task']}")
    console.print(f"features: {escape(', '.join(job['features']))}")
    console.print(f"hyperparameters: {escape(json.dumps(job['hyperparameters']))}")
    console.print(f"seed: {job.get('seed', 0)}")
    details = _describe(job)
    console.print(f"progress: {details['steps']} {details['metric']} {details['eta']}".rstrip())
    if job["metrics"]:
        console.print(_metrics_table(job["metrics"]))
    if job.get("error"):
        console.print(f"[red]error[/]: {escape(job['error'])}")


@jobs_app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """Cancel a queued or running job (a running one stops at its next check, within seconds)."""
    job = call_server(url, key, lambda c: c.cancel_training_job(job_id))
    state = "cancel requested" if job["state"] not in FINISHED else f"already {job['state']}"
    console.print(f"job {job_id}: {state}")


@jobs_app.command("trials")
def trials(
    job_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """The trials of a job's hyperparameter search: parameters, metric, state, time; the best marked."""
    page = call_server(url, key, lambda c: c.training_trials(job_id))
    table = Table(title=f"{page['total']} trials")
    for column in ("#", "params", "value", "state", "worker", "seconds", ""):
        table.add_column(column)
    for t in page["items"]:
        seconds = "-" if t["duration_seconds"] is None else f"{t['duration_seconds']:.1f}"
        table.add_row(
            str(t["number"]),
            escape(json.dumps(t["params"])),
            _fmt(t["value"]),
            t["state"],
            escape(t["worker"] or "-"),
            seconds,
            "[bold green]best[/]" if t["best"] else escape((t["error"] or "")[:60]),
        )
    console.print(table)
