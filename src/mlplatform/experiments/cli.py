"""`mlplatform experiments create|list|show|promote|stop`: A/B tests, canaries, shadows; results tables."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlplatform.cliutil import DEFAULT_URL, Key, Url, call_server, fail

experiments_app = typer.Typer(
    help="A/B tests, canaries and shadow traffic on a running server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


def parse_variant(text: str) -> dict[str, Any]:
    """NAME=VERSION[:WEIGHT], e.g. a=3:50, b=@candidate:50, shadow=4:25."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        fail(f"error: --variant {text!r}: expected NAME=VERSION[:WEIGHT]")
    version, _, weight = rest.rpartition(":") if ":" in rest else (rest, "", "")
    variant: dict[str, Any] = {"name": name, "version": version or rest}
    if weight:
        try:
            variant["weight"] = float(weight)
        except ValueError:
            fail(f"error: --variant {text!r}: the weight {weight!r} is not a number")
    return variant


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _estimate(e: dict[str, Any] | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    low, high = e.get("low"), e.get("high")
    interval = f" [{_number(low)}, {_number(high)}]" if low is not None and high is not None else ""
    return f"{_number(e['value'])}{interval}"


def _experiments_table(items: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("id", "name", "model", "type", "state", "variants", "metric", "created", "by"):
        table.add_column(column)
    for e in items:
        variants = ", ".join(f"{v['name']}={v['version']} ({v['weight']:g} %)" for v in e["variants"])
        table.add_row(
            e["id"],
            escape(e["name"]),
            escape(e["model"]),
            e["type"],
            e["state"],
            escape(variants),
            e["metric"],
            e["created_at"][:19],
            escape(e["created_by"]),
        )
    return table


def results_tables(results: dict[str, Any]) -> list[Table]:
    """Per-variant estimates (with 1 - alpha intervals), then each comparison with the control."""
    arms = Table(title=f"variants (intervals at {100 * (1 - results['alpha']):g} %)")
    for column in (
        "variant",
        "version",
        "weight",
        "requests",
        "errors",
        "error rate",
        "p50 ms",
        "p95 ms",
        "labelled",
        "metrics",
    ):
        arms.add_column(column)
    for v in results["variants"]:
        metrics = "; ".join(f"{k} {_estimate(e)}" for k, e in v["metrics"].items()) or "-"
        arms.add_row(
            v["name"],
            escape(v["version"]),
            f"{v['weight']:g} %",
            str(v["requests"]),
            str(v["errors"]),
            _estimate(v["error_rate"]),
            _estimate(v["latency_ms"].get("p50")),
            _estimate(v["latency_ms"].get("p95")),
            str(v["labelled"]),
            escape(metrics),
        )
    tests = Table(title=f"against the control, on {results['metric']} (always-valid test)")
    for column in (
        "variant",
        "control",
        "samples",
        "difference",
        "interval",
        "p",
        "fixed-horizon p",
        "verdict",
    ):
        tests.add_column(column)
    for c in results["comparisons"]:
        verdict = "not significant"
        if c["significant"]:
            verdict = "[green]better[/]" if c["better"] else "[red]worse[/]"
        interval = c["interval"]
        tests.add_row(
            c["variant"],
            c["control"],
            f"{c['samples'][0]} / {c['samples'][1]}",
            _number(c["difference"]),
            f"[{_number(interval.get('low'))}, {_number(interval.get('high'))}]",
            _number(c["p_value"], 3),
            _number(c["fixed_horizon_p_value"], 3),
            verdict,
        )
    return [arms, tests]


@experiments_app.command("create")
def create(
    model: Annotated[str, typer.Option("--model", help="the registered model name")],
    variant: Annotated[
        list[str], typer.Option("--variant", help="NAME=VERSION[:WEIGHT]; the first is the control")
    ],
    kind: Annotated[str, typer.Option("--type", help="ab, canary or shadow")] = "ab",
    name: Annotated[str | None, typer.Option(help="default: the type and the model")] = None,
    metric: Annotated[
        str, typer.Option(help="accuracy, error_rate, latency_p95, mae or rmse")
    ] = "error_rate",
    min_samples: Annotated[int, typer.Option(help="per variant, before a winner is named")] = 1000,
    min_effect: Annotated[float | None, typer.Option(help="the smallest difference worth finding")] = None,
    sticky: Annotated[str, typer.Option(help="request_id, random, header:NAME or field:NAME")] = "request_id",
    max_duration: Annotated[float | None, typer.Option(help="seconds; then the experiment stops")] = None,
    steps: Annotated[str | None, typer.Option(help="canary: percentages, e.g. 5,25,50,100")] = None,
    step_min_samples: Annotated[int | None, typer.Option(help="canary: samples per step")] = None,
    step_min_seconds: Annotated[float | None, typer.Option(help="canary: seconds per step")] = None,
    max_degradation: Annotated[float | None, typer.Option(help="canary: 0.1 = 10 % worse rolls back")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Start an experiment on MODEL's traffic."""
    body: dict[str, Any] = {
        "name": name or f"{kind} on {model}",
        "model": model,
        "type": kind,
        "variants": [parse_variant(v) for v in variant],
        "metric": metric,
        "min_samples": min_samples,
        "sticky": sticky,
    }
    if min_effect is not None:
        body["min_effect"] = min_effect
    if max_duration is not None:
        body["max_duration_seconds"] = max_duration
    canary: dict[str, Any] = {}
    if steps is not None:
        try:
            canary["steps"] = [float(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            fail(f"error: --steps {steps!r}: expected percentages like 5,25,50,100")
    for field, value in (
        ("step_min_samples", step_min_samples),
        ("step_min_seconds", step_min_seconds),
        ("max_degradation", max_degradation),
    ):
        if value is not None:
            canary[field] = value
    if canary:
        body["canary"] = canary
    created = call_server(url, key, lambda c: c.create_experiment(**body))
    console.print(f"started experiment [bold]{created['id']}[/]")
    console.print(_experiments_table([created]))


@experiments_app.command("list")
def list_experiments(
    model: Annotated[str | None, typer.Option(help="only this model's")] = None,
    state: Annotated[str | None, typer.Option(help="running, promoted, stopped or rolled_back")] = None,
    limit: int = 100,
    offset: int = 0,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List experiments, newest first."""
    page = call_server(url, key, lambda c: c.experiments(model, state, limit, offset))
    console.print(_experiments_table(page["items"], title=f"{page['total']} experiments"))


@experiments_app.command("show")
def show(
    experiment_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """An experiment, its results per variant and the recommendation."""
    experiment = call_server(url, key, lambda c: c.experiment(experiment_id))
    results = call_server(url, key, lambda c: c.experiment_results(experiment_id))
    console.print(_experiments_table([experiment]))
    if experiment.get("reason"):
        console.print(f"ended: {escape(experiment['reason'])}")
    for table in results_tables(results):
        console.print(table)
    advice = results["recommendation"].replace("_", " ")
    winner = f": [bold]{results['winner']}[/]" if results.get("winner") else ""
    more = (
        f" (about {results['more_samples']} more samples per variant)" if results.get("more_samples") else ""
    )
    console.print(f"recommendation: {advice}{winner}{more} — {escape(results['reason'])}")


@experiments_app.command("promote")
def promote(
    experiment_id: Annotated[str, typer.Argument(metavar="ID")],
    variant: Annotated[str | None, typer.Option(help="default: the recommended winner")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Point `production` at a variant's version and end the experiment."""
    done = call_server(url, key, lambda c: c.promote_experiment(experiment_id, variant))
    chosen = next(v for v in done["variants"] if v["name"] == done["winner"])
    console.print(f"promoted {done['winner']}: production is now {chosen['version']}")


@experiments_app.command("stop")
def stop(
    experiment_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """End the experiment; traffic goes back to the model's default version."""
    done = call_server(url, key, lambda c: c.stop_experiment(experiment_id))
    console.print(f"experiment {experiment_id}: {done['state']}")
