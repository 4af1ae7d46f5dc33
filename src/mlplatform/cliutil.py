"""What every `mlplatform` sub-command shares: settings or one clear line and an exit; calling a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from mlplatform.client import ApiError, Client
from mlplatform.config import ConfigError, load_settings
from mlplatform.settings import Settings

T = TypeVar("T")
errors = Console(stderr=True)
# The options of every command that talks to a running server.
Url = Annotated[str, typer.Option("--url", envvar="MLPLATFORM_URL", help="the server")]
Key = Annotated[str | None, typer.Option("--api-key", envvar="MLPLATFORM_API_KEY", help="an API key")]
DEFAULT_URL = "http://127.0.0.1:8080"


def fail(message: str, code: int = 2) -> NoReturn:
    errors.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(f"config error: {exc}")


def call_server(url: str, key: str | None, work: Callable[[Client], T]) -> T:
    """Run `work` with a client; an API error or an unreachable server is one line and exit code 1."""
    with Client(url, key) as client:
        try:
            return work(client)
        except ApiError as exc:
            fail(f"error: {exc.message}" + (f" ({exc.details})" if exc.details else ""), 1)
        except OSError as exc:
            fail(f"error: cannot reach {url}: {exc}", 1)


def transfer_progress(console: Console) -> Progress:
    """A bar with bytes and speed, for uploads and downloads; gone when done."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )
