"""`mlplatform backup [--to URL]`, `backup list`, `backup prune`, `mlplatform restore SOURCE`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlplatform import db
from mlplatform.backups.location import BackupEntry
from mlplatform.backups.manifest import BackupError, Manifest
from mlplatform.backups.progress import Reporter
from mlplatform.backups.service import BackupService
from mlplatform.cliutil import fail, settings_or_exit
from mlplatform.stores.artifacts import InvalidKeyError, StorageUnavailableError

backup_app = typer.Typer(
    help="Logical backups of the database (every table; prediction logs with --with-logs).",
    pretty_exceptions_show_locals=False,
)
console = Console()
T = TypeVar("T")
To = Annotated[
    str | None,
    typer.Option(
        "--to",
        help="file://PATH or s3://BUCKET[/PREFIX]?endpoint=…; default backup.location, else storage.url "
        "under backups/",
    ),
]
At = Annotated[str | None, typer.Option("--at", help="the location (as --to); default as for backup")]


class BarReporter(Reporter):
    """A rich bar per phase; rows or bytes of the total."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def phase(self, description: str, total: float | None = None) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(escape(description), total=total)

    def advance(self, amount: float) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _run(work: Callable[[BackupService], Awaitable[T]]) -> T:
    """Run `work` with a service on the configured database and storage; a refusal is one line, exit 1."""
    settings = settings_or_exit()
    # The summary table says what the info log lines would; warnings still show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    service = BackupService(database=settings.database, storage=settings.storage, settings=settings.backup)

    async def run() -> T:
        try:
            return await work(service)
        finally:
            await service.close()

    try:
        return asyncio.run(run())
    except (BackupError, InvalidKeyError) as exc:
        fail(f"error: {exc}", 1)
    except StorageUnavailableError as exc:
        fail(f"error: storage: {exc}", 1)
    except ValueError as exc:  # a URL the stores refuse
        fail(f"error: {exc}", 2)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return str(count)


def manifest_table(manifest: Manifest, title: str) -> Table:
    table = Table(title=title)
    for name, justify in (("table", "left"), ("rows", "right"), ("size", "right"), ("sha256", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for entry in manifest.tables:
        table.add_row(entry.name, f"{entry.rows:,}", _size(entry.bytes), entry.sha256[:12])
    table.add_row("[b]total[/]", f"[b]{manifest.total_rows:,}[/]", f"[b]{_size(manifest.total_bytes)}[/]", "")
    return table


@backup_app.callback(invoke_without_command=True)
def backup(
    ctx: typer.Context,
    to: To = None,
    with_logs: Annotated[
        bool, typer.Option("--with-logs", help="include prediction logs (they may be most of the database)")
    ] = False,
) -> None:
    """Write a consistent export of every table to storage, with a manifest and checksums."""
    if ctx.invoked_subcommand is not None:
        return

    async def work(service: BackupService) -> tuple[Manifest, str]:
        with _progress() as progress:
            manifest, folder = await service.create(
                location=service.location(to), with_logs=with_logs, reporter=BarReporter(progress)
            )
        return manifest, folder.where

    manifest, where = _run(work)
    console.print(manifest_table(manifest, f"backup {manifest.id} (schema {manifest.revision})"))
    if manifest.skipped:
        console.print(f"not included: {', '.join(manifest.skipped)} (add --with-logs)")
    console.print(f"written to {escape(where)}")
    console.print(f"restore with: mlplatform restore {escape(where)}", soft_wrap=True)


@backup_app.command("list")
def list_backups(at: At = None) -> None:
    """The backups at a location, oldest first; incomplete ones (no manifest) are marked."""

    async def work(service: BackupService) -> tuple[list[BackupEntry], str]:
        location = service.location(at)
        return await location.entries(), location.where

    entries, where = _run(work)
    table = Table(title=f"backups at {escape(where)}")
    table.add_column("id", no_wrap=True)
    for name in ("created (UTC)", "schema", "logs", "tables", "rows", "size", "state"):
        table.add_column(name, justify="right" if name in ("tables", "rows", "size") else "left")
    for entry in entries:
        m = entry.manifest
        if m is None:
            table.add_row(entry.id, "", "", "", "", "", _size(entry.size), "[yellow]incomplete[/]")
        else:
            table.add_row(
                entry.id,
                m.created_at.strftime("%Y-%m-%d %H:%M"),
                m.revision,
                "yes" if m.with_logs else "no",
                str(len(m.tables)),
                f"{m.total_rows:,}",
                _size(entry.size),
                "[green]complete[/]",
            )
    console.print(table)


@backup_app.command("prune")
def prune(
    keep: Annotated[int, typer.Option(min=1, help="complete backups to keep, the newest")],
    at: At = None,
) -> None:
    """Delete all but the KEEP newest complete backups, and incomplete ones past backup.timeout-seconds."""

    async def work(service: BackupService) -> list[str]:
        return await service.prune(service.location(at), keep=keep)

    deleted = _run(work)
    console.print(f"deleted {len(deleted)} backup(s)" + (f": {', '.join(deleted)}" if deleted else ""))


def restore(
    source: Annotated[
        str, typer.Argument(metavar="SOURCE", help="a backup id (see `backup list`) or the backup's URL")
    ],
    at: At = None,
) -> None:
    """Load a backup into an EMPTY database (the configured database.url), checking every file first."""

    async def work(service: BackupService) -> tuple[Manifest, bool]:
        folder = service.folder(source, location=at)
        with _progress() as progress:
            restored = await service.restore(folder, reporter=BarReporter(progress))
        return restored.manifest, restored.created_schema

    manifest, created = _run(work)
    console.print(
        manifest_table(
            manifest, f"restored {manifest.id} (taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
    )
    if created:
        console.print(f"the database was created at schema revision {manifest.revision}")
    if manifest.revision != db.head_revision():
        console.print(f"next: `mlplatform db upgrade` (this build's schema is {db.head_revision()})")
    console.print("the artifacts (models, datasets) are not in a backup: the storage bucket must hold them")
