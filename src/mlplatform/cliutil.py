"""What every `mlplatform` sub-command shares: loading settings or exiting with one clear line."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from mlplatform.config import ConfigError, load_settings
from mlplatform.settings import Settings

errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    errors.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(f"config error: {exc}")
