"""`mlplatform feedback send` (a progress bar) and `mlplatform monitor show|timeline|drift|alerts|ack`."""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from mlplatform.client import Client
from mlplatform.cliutil import DEFAULT_URL, Key, Url, call_server, fail

feedback_app = typer.Typer(
    help="Send ground truth (actual values) for logged predictions.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
monitor_app = typer.Typer(
    help="Performance of models from their feedback.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
MAX_PER_REQUEST = 10_000  # the server's limit per feedback request
ID_COLUMNS = ("prediction_id", "request_id")


def parsed_value(text: str) -> Any:
    """A CSV cell as the number it spells, else the string (class labels stay as written)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def feedback_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Items from a CSV with a header: `prediction_id` or `request_id`, `actual`, optional `timestamp`."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if "actual" not in columns or not columns & set(ID_COLUMNS):
            fail(f"error: {path}: needs an `actual` column and a `prediction_id` or `request_id` column")
        for line, row in enumerate(reader, start=2):
            item: dict[str, Any] = {"actual": parsed_value(row["actual"])}
            ids = [(c, row[c]) for c in ID_COLUMNS if row.get(c)]
            if len(ids) != 1:
                fail(f"error: {path}:{line}: give exactly one of prediction_id and request_id")
            item[ids[0][0]] = ids[0][1]
            if row.get("timestamp"):
                item["timestamp"] = row["timestamp"]
            yield item


def chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


@feedback_app.command("send")
def send(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE.csv")],
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_PER_REQUEST, help="items per request")] = 5_000,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Send FILE.csv's actual values (columns: prediction_id or request_id, actual, optional timestamp)."""
    totals = {"accepted": 0, "duplicates": 0, "unknown": 0}
    unknown_ids: list[str] = []
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task(f"sending {path.name}", total=count_rows(path))
        for chunk in chunks(feedback_rows(path), batch_size):
            result = call_server(url, key, functools.partial(Client.send_feedback, items=chunk))
            for name in totals:
                totals[name] += result[name]
            unknown_ids += result["unknown_ids"]
            progress.advance(task, len(chunk))
    table = Table(title=f"feedback from {escape(path.name)}")
    for name in totals:
        table.add_column(name, justify="right")
    table.add_row(*(str(v) for v in totals.values()))
    console.print(table)
    if unknown_ids:
        shown = ", ".join(unknown_ids[:10]) + (" …" if len(unknown_ids) > 10 else "")
        console.print(f"unknown ids: {escape(shown)}")


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@monitor_app.command("show")
def show(
    model: Annotated[str, typer.Argument(metavar="MODEL")],
    window: Annotated[str, typer.Option(help="1h, 24h, 7d, …")] = "24h",
    version: Annotated[str | None, typer.Option(help="one version (number or id); default: all")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show a model's performance over a window, from its feedback."""
    found = call_server(url, key, lambda c: c.performance(model, window=window, version=version))
    coverage = found["label_coverage"]
    console.print(
        f"[bold]{escape(found['model'])}[/] {escape(found['version'] or 'all versions')}  "
        f"{found['from'][:19]} → {found['to'][:19]}  predictions {found['predictions']}, "
        f"labelled {found['labelled']} ({'-' if coverage is None else f'{coverage:.1%}'})"
    )
    metrics = found.get("classification") or found.get("regression") or {}
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, int | float) or value is None:
            table.add_row(name, _number(value))
    console.print(table)
    per_class = (found.get("classification") or {}).get("per_class") or {}
    if per_class:
        classes = Table(title="per class")
        for column in ("class", "precision", "recall", "f1", "support"):
            classes.add_column(column, justify="right")
        for label, values in per_class.items():
            classes.add_row(
                escape(str(label)),
                *(_number(values.get(k)) for k in ("precision", "recall", "f1", "support")),
            )
        console.print(classes)


@monitor_app.command("timeline")
def timeline(
    model: Annotated[str, typer.Argument(metavar="MODEL")],
    window: Annotated[str, typer.Option(help="1h, 24h, 7d, 30d, …")] = "24h",
    bucket: Annotated[str | None, typer.Option(help="15m, 1h, 6h, 1d, …; default from the window")] = None,
    version: Annotated[str | None, typer.Option(help="one version (number or id); default: all")] = None,
    everything: Annotated[bool, typer.Option("--all", help="also the buckets without predictions")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show a model's performance per time bucket (accuracy and macro F1, or RMSE and MAE) from feedback."""
    found = call_server(url, key, lambda c: c.timeline(model, window=window, version=version, bucket=bucket))
    regression = found["task"] == "regression"
    metrics = ("rmse", "mae") if regression else ("accuracy", "f1_macro")
    total = found["total"]
    coverage = total["label_coverage"]
    console.print(
        f"[bold]{escape(found['model'])}[/] {escape(found['version'] or 'all versions')}  "
        f"{found['from'][:19]} → {found['to'][:19]} in buckets of {found['bucket']}  "
        f"predictions {total['predictions']}, labelled {total['labelled']} "
        f"({'-' if coverage is None else f'{coverage:.1%}'})"
        + "".join(f", {m} {_number(total[m])}" for m in metrics if total[m] is not None)
    )
    table = Table()
    for column in ("from", "to", "predictions", "labelled", "coverage", *metrics):
        table.add_column(column, justify="left" if column in ("from", "to") else "right")
    for b in found["buckets"]:
        if b["predictions"] or everything:
            share = b["label_coverage"]
            table.add_row(
                b["from"][:16].replace("T", " "),
                b["to"][:16].replace("T", " "),
                str(b["predictions"]),
                str(b["labelled"]),
                "-" if share is None else f"{share:.1%}",
                *(_number(b[m]) for m in metrics),
            )
    console.print(table)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


@monitor_app.command("drift")
def drift(
    model: Annotated[str, typer.Argument(metavar="MODEL")],
    check: Annotated[
        bool, typer.Option("--check", help="run a check now instead of showing the latest")
    ] = False,
    window: Annotated[str | None, typer.Option(help="with --check: 1h, 24h, 7d, …")] = None,
    version: Annotated[str | None, typer.Option(help="one version; default: the model's default")] = None,
    plot: Annotated[
        Path | None, typer.Option(dir_okay=False, help="also save the report's plot (PNG)")
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Show a model's latest drift report, or run a check now (--check), feature by feature."""
    if check:
        report = call_server(url, key, lambda c: c.drift_check(model, window=window, version=version))
    else:
        page = call_server(url, key, lambda c: c.drift_reports(model, version=version, limit=1))
        if not page["items"]:
            fail(f"no drift report for {model} yet: run `mlplatform monitor drift {model} --check`", 1)
        report = call_server(url, key, lambda c: c.drift_report(model, page["items"][0]["id"]))
    verdict = "[red]DRIFT[/]" if report["drift"] else "[green]no drift[/]"
    console.print(
        f"[bold]{escape(report['model'])}[/] v{report['version']}  {verdict}  report {report['id']} "
        f"({report['trigger']}, {report['created_at'][:19]})  {report['from'][:19]} → {report['to'][:19]}  "
        f"rows: {report['sampled_rows']} current, {report['reference_rows']} reference"
    )
    table = Table()
    for column in ("feature", "kind", "test", "p", "missing p", "Holm p", "distance", "PSI", "drift"):
        table.add_column(column, justify="left" if column in ("feature", "kind", "test") else "right")
    for f in report["features"]:
        table.add_row(
            escape(f["feature"]),
            f["kind"],
            f["test"] or escape(f["note"] or f["status"]),
            _p(f["p_value"]),
            _p(f["missing_p_value"]),
            _p(f["adjusted_p_value"]),
            _number(f["distance"]),
            _number(f["psi"]),
            "[red]yes[/]" if f["drift_adjusted"] else "no",
        )
    console.print(table)
    if plot is not None:
        plot.write_bytes(call_server(url, key, lambda c: c.drift_plot(model, report["id"])))
        console.print(f"plot saved to {escape(str(plot))}")


@monitor_app.command("alerts")
def alerts(
    state: Annotated[str | None, typer.Option(help="firing, acknowledged or resolved")] = None,
    model: Annotated[str | None, typer.Option(help="one model's alerts")] = None,
    severity: Annotated[str | None, typer.Option(help="info, warning or critical")] = None,
    limit: int = 100,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List alerts, most recently seen first."""
    page = call_server(url, key, lambda c: c.alerts(state=state, model=model, limit=limit, severity=severity))
    table = Table(title=f"{page['total']} alerts")
    for column in (
        "id",
        "state",
        "severity",
        "rule",
        "model",
        "value",
        "threshold",
        "first seen",
        "last seen",
    ):
        table.add_column(column)
    for a in page["items"]:
        table.add_row(
            a["id"],
            a["state"],
            a["severity"],
            escape(a["rule"]),
            escape(a["model"] or "-"),
            _number(a["value"]),
            _number(a["threshold"]),
            a["first_seen"][:19],
            a["last_seen"][:19],
        )
    console.print(table)


@monitor_app.command("ack")
def ack(
    alert_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """Acknowledge a firing alert (it still resolves by itself when its condition clears)."""
    found = call_server(url, key, lambda c: c.acknowledge(alert_id))
    console.print(f"acknowledged {found['id']} ({escape(found['rule'])} on {escape(found['model'] or '-')})")
