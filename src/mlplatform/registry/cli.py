"""`mlplatform models`: list, show, upload (with a progress bar), stage, alias, history, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mlplatform.cliutil import DEFAULT_URL, Key, Url, call_server, fail, transfer_progress

models_app = typer.Typer(
    help="Browse and manage registered models through a running server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


def _versions_table(versions: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("version", "id", "status", "aliases", "framework", "task", "features", "created", "by"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v["version"]),
            v["id"],
            v["status"],
            ", ".join(v["aliases"]),
            v["framework"],
            v["task"],
            str(len(v["features"])),
            v["created_at"][:19],
            v["created_by"],
        )
    return table


@models_app.command("list")
def list_models(
    url: Url = DEFAULT_URL,
    key: Key = None,
    prefix: str | None = None,
    stage: str | None = None,
    tag: Annotated[str | None, typer.Option(help="key:value")] = None,
    framework: str | None = None,
) -> None:
    """List registered models."""
    page = call_server(
        url, key, lambda c: c.list_models(prefix=prefix, stage=stage, tag=tag, framework=framework)
    )
    table = Table(title=f"{page['total']} models")
    for column in ("name", "versions", "default", "aliases", "frameworks", "updated"):
        table.add_column(column)
    for m in page["items"]:
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(m["aliases"].items()))
        table.add_row(
            m["name"],
            str(m["versions"]),
            f"v{m['default_version']}" if m["default_version"] else "-",
            aliases,
            ", ".join(m["frameworks"]),
            m["updated_at"][:19],
        )
    console.print(table)


@models_app.command("show")
def show(name: str, url: Url = DEFAULT_URL, key: Key = None) -> None:
    """Show a model and its versions."""
    model = call_server(url, key, lambda c: c.get_model(name))
    versions = call_server(url, key, lambda c: c.list_versions(name))
    console.print(f"[bold]{model['name']}[/] {model['description']}")
    console.print(f"tags: {model['tags'] or '-'}   default: v{model['default_version']}")
    console.print(_versions_table(versions["items"]))


@models_app.command("upload")
def upload(
    name: str,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    url: Url = DEFAULT_URL,
    key: Key = None,
    metadata: Annotated[str | None, typer.Option(help="JSON metadata, or @file.json")] = None,
    description: str | None = None,
) -> None:
    """Register a new version of NAME from an artifact file."""
    meta: dict[str, Any] = {}
    if metadata:
        raw = Path(metadata[1:]).read_text() if metadata.startswith("@") else metadata
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            fail(f"error: --metadata is not valid JSON: {exc}")
    if description:
        meta["description"] = description
    with transfer_progress(console) as progress:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        created = call_server(
            url, key, lambda c: c.upload(name, path, meta, lambda n: progress.advance(task, n))
        )
    console.print(f"registered [bold]{created['id']}[/] ({created['framework']}, {created['task']})")
    console.print(_versions_table([created]))


@models_app.command("stage")
def stage(
    name: str,
    version: int,
    stage_name: Annotated[str, typer.Argument(metavar="STAGE", help="staging, production or archived")],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Move VERSION of NAME to a stage."""
    changed = call_server(url, key, lambda c: c.stage(name, version, stage_name))
    console.print(_versions_table([changed]))


@models_app.command("alias")
def alias(
    name: str,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    version: Annotated[int | None, typer.Argument(help="omit with --remove")] = None,
    remove: bool = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Point ALIAS of NAME at VERSION (or --remove it)."""
    if remove:
        call_server(url, key, lambda c: c.remove_alias(name, alias_name))
        console.print(f"removed {name}@{alias_name}")
        return
    if version is None:
        fail("error: give a VERSION, or --remove")
    changed = call_server(url, key, lambda c: c.set_alias(name, alias_name, version))
    console.print(_versions_table([changed]))


@models_app.command("history")
def history(
    name: str,
    at: Annotated[
        str | None, typer.Option(help="which versions the aliases pointed at, at this time (ISO 8601)")
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """The audit history of NAME, or its aliases at a point in time."""
    answer = call_server(url, key, lambda c: c.history(name, at))
    if at:
        for alias_name, version in sorted(answer["aliases"].items()):
            console.print(f"{alias_name}: v{version}")
        return
    table = Table(title=f"history of {name}")
    for column in ("at", "actor", "action", "alias", "from", "to"):
        table.add_column(column)
    for h in answer["items"]:
        table.add_row(
            h["at"][:19],
            h["actor"],
            h["action"],
            h["alias"] or "",
            str(h["from_version"] or ""),
            str(h["to_version"] or ""),
        )
    console.print(table)


@models_app.command("delete")
def delete(
    name: str,
    version: Annotated[int | None, typer.Argument()] = None,
    purge: Annotated[bool, typer.Option(help="remove rows and stored objects instead of archiving")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Archive (default) or purge a version, or a whole model."""
    call_server(url, key, lambda c: c.delete(name, version, purge))
    what = f"{name} v{version}" if version is not None else name
    console.print(f"{'purged' if purge else 'archived'} {what}")
