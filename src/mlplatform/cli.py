"""The `mlplatform` command: serve, config, db, doctor, and the domains' sub-commands."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlplatform import __version__, db
from mlplatform.auth.cli import keys_app
from mlplatform.backups.cli import backup_app
from mlplatform.backups.cli import restore as restore_backup
from mlplatform.cliutil import fail, settings_or_exit
from mlplatform.config import redacted
from mlplatform.datasets.cli import datasets_app
from mlplatform.doctor import check_backends, check_libraries
from mlplatform.experiments.cli import experiments_app
from mlplatform.logging import configure_logging
from mlplatform.monitoring.cli import feedback_app, monitor_app
from mlplatform.registry.cli import models_app
from mlplatform.server import export_overrides
from mlplatform.server import serve as run_server
from mlplatform.training.cli import jobs_app, train

app = typer.Typer(
    help="mlplatform: registry, training, serving and monitoring of models.", no_args_is_help=True
)
config_app = typer.Typer(
    help="Inspect the effective configuration.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
db_app = typer.Typer(
    help="Database schema migrations.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(feedback_app, name="feedback")
app.add_typer(monitor_app, name="monitor")
app.add_typer(jobs_app, name="jobs")
app.add_typer(experiments_app, name="experiments")
app.add_typer(backup_app, name="backup")
app.command("train")(train)
app.command("restore")(restore_backup)
console = Console()


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Overrides server.host")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides server.port")] = None,
    workers: Annotated[int | None, typer.Option(help="Overrides server.workers")] = None,
) -> None:
    """Serve the HTTP API (migrates the database first on the embedded default)."""
    overrides = {
        f"MLPLATFORM_SERVER__{key}": str(value)
        for key, value in (("HOST", host), ("PORT", port), ("WORKERS", workers))
        if value is not None
    }
    export_overrides(overrides)
    settings = settings_or_exit()
    configure_logging(settings.logging)
    run_server(settings)


@config_app.command("show")
def config_show(
    output: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Print the effective configuration, secrets redacted."""
    data = redacted(settings_or_exit())
    if output == "json":
        console.print_json(json.dumps(data, default=str))
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    settings = settings_or_exit()
    try:
        db.upgrade(settings.database, revision)
    except Exception as exc:  # say what failed in one line; the traceback helps nobody here
        fail(f"db upgrade failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", 1)
    console.print(f"database at {db.current_revision(settings.database)}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    settings = settings_or_exit()
    db.downgrade(settings.database, revision)
    console.print(f"database at {db.current_revision(settings.database)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and of this build."""
    settings = settings_or_exit()
    console.print(f"database: {db.current_revision(settings.database)}  build: {db.head_revision()}")


@app.command()
def doctor() -> None:
    """Check every ML library and backend, and say what to do about any that fails."""
    settings = settings_or_exit()
    with console.status("importing ML libraries"):
        findings = check_libraries()
    with console.status("asking the backends"):
        findings += asyncio.run(check_backends(settings))
    table = Table(title=f"mlplatform doctor (profile {settings.profile})")
    for column in ("check", "", "detail", "what to do"):
        table.add_column(column)
    for finding in findings:
        mark = "[green]ok[/]" if finding.ok else ("[red]FAIL[/]" if finding.required else "[yellow]--[/]")
        table.add_row(finding.name, mark, escape(finding.detail), escape(finding.hint))
    console.print(table)
    if any(not f.ok and f.required for f in findings):
        raise typer.Exit(1)
