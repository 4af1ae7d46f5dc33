"""`mlplatform datasets`: upload (with a progress bar), list, show, download, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlplatform.cliutil import DEFAULT_URL, Key, Url, call_server, fail, transfer_progress

datasets_app = typer.Typer(
    help="Upload and browse datasets (CSV or Parquet) through a running server.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"error: --tag {pair!r}: expected key=value")
        tags[key] = value
    return tags


def _datasets_table(datasets: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in ("id", "name", "format", "rows", "columns", "bytes", "created", "by"):
        table.add_column(column)
    for d in datasets:
        table.add_row(
            d["id"],
            escape(d["name"]),
            d["format"],
            str(d["rows"]),
            str(len(d["columns"])),
            str(d["size_bytes"]),
            d["created_at"][:19],
            escape(d["created_by"]),
        )
    return table


def _columns_table(columns: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("column", "type", "nulls", "min", "max", "mean"):
        table.add_column(column)
    for c in columns:
        stats = ("" if c[k] is None else f"{c[k]:.6g}" for k in ("min", "max", "mean"))
        table.add_row(escape(c["name"]), c["type"], str(c["nulls"]), *stats)
    return table


@datasets_app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE")],
    name: Annotated[str, typer.Option("--name", help="the dataset's name")],
    description: str = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="key=value; repeat for more")] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Upload a CSV (UTF-8, header row) or Parquet FILE as a new dataset."""
    tags = _tags(tag or [])
    with transfer_progress(console) as progress:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        created = call_server(
            url,
            key,
            lambda c: c.upload_dataset(path, name, description, tags, lambda n: progress.advance(task, n)),
        )
    console.print(f"uploaded dataset [bold]{created['id']}[/] ({created['rows']} rows, {created['format']})")
    console.print(_datasets_table([created]))


@datasets_app.command("list")
def list_datasets(
    name: Annotated[str | None, typer.Option(help="only datasets with this name")] = None,
    limit: int = 100,
    offset: int = 0,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List datasets, newest first."""
    page = call_server(url, key, lambda c: c.list_datasets(name=name, limit=limit, offset=offset))
    console.print(_datasets_table(page["items"], title=f"{page['total']} datasets"))


@datasets_app.command("show")
def show(
    dataset_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """Show a dataset and its columns."""
    found = call_server(url, key, lambda c: c.get_dataset(dataset_id))
    console.print(f"[bold]{escape(found['name'])}[/] {found['id']}  {escape(found['description'])}")
    console.print(f"sha256: {found['sha256']}   tags: {escape(str(found['tags'] or '-'))}")
    console.print(_datasets_table([found]))
    console.print(_columns_table(found["columns"]))


@datasets_app.command("download")
def download(
    dataset_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="the file to write")],
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Download a dataset's file."""
    found = call_server(url, key, lambda c: c.get_dataset(dataset_id))
    with transfer_progress(console) as progress:
        task = progress.add_task(f"downloading {dataset_id}", total=found["size_bytes"])
        size = call_server(
            url, key, lambda c: c.download_dataset(dataset_id, output, lambda n: progress.advance(task, n))
        )
    console.print(f"wrote {size} bytes to {escape(str(output))}")


@datasets_app.command("delete")
def delete(
    dataset_id: Annotated[str, typer.Argument(metavar="ID")], url: Url = DEFAULT_URL, key: Key = None
) -> None:
    """Delete a dataset and its stored file."""
    call_server(url, key, lambda c: c.delete_dataset(dataset_id))
    console.print(f"deleted dataset {dataset_id}")
