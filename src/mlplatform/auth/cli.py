"""`mlplatform keys`: create, list and revoke API keys from the command line (talks to the database)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from mlplatform import db
from mlplatform.app import build_platform
from mlplatform.auth.keys import generate_key
from mlplatform.auth.schemas import ApiKeyCreate, ApiKeyRead, Role
from mlplatform.auth.service import AuthService
from mlplatform.cliutil import settings_or_exit
from mlplatform.errors import DomainError
from mlplatform.logging import configure_logging
from mlplatform.settings import Settings

T = TypeVar("T")
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()


def _run(settings: Settings, work: Callable[[AuthService], Awaitable[T]]) -> T:
    configure_logging(settings.logging)

    async def main() -> T:
        if settings.embedded:
            await asyncio.to_thread(db.upgrade, settings.database)
        platform = build_platform(settings)
        try:
            return await work(platform.auth)
        finally:
            await platform.auth.limiter.close()
            await platform.cache.close()
            await platform.artifacts.close()
            await platform.database.dispose()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        Console(stderr=True).print(f"error: {exc.message}", markup=False)
        raise typer.Exit(1) from None


def _table(keys: list[ApiKeyRead]) -> Table:
    table = Table()
    for column in ("id", "name", "role", "owner", "prefix", "rate limit", "expires", "revoked", "last used"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.role.value,
            key.owner,
            key.prefix + "…",
            key.rate_limit or "default",
            f"{key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "never",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "",
        )
    return table


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="what the key is for")],
    role: Annotated[Role, typer.Option(help="admin, editor, predictor or viewer")],
    owner: Annotated[str, typer.Option(help="the user the key belongs to (created when new)")],
    expires_in_days: Annotated[int | None, typer.Option(help="expire after this many days")] = None,
    rate_limit: Annotated[str | None, typer.Option(help="this key's own limit, e.g. 200/second")] = None,
) -> None:
    """Create a key and print it once: it is stored only as a hash."""
    try:
        request = ApiKeyCreate(
            name=name, role=role, owner=owner, expires_in_days=expires_in_days, rate_limit=rate_limit
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        Console(stderr=True).print(f"error: {problems}", markup=False)
        raise typer.Exit(2) from None
    created = _run(settings_or_exit(), lambda auth: auth.create_key(request))
    console.print(_table([created]))
    console.print("Key (shown once, store it now):", style="bold")
    print(created.key)


@keys_app.command("list")
def list_keys(
    show_revoked: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
) -> None:
    """List keys (never the keys themselves)."""
    keys = _run(settings_or_exit(), lambda auth: auth.list_keys(include_revoked=show_revoked))
    console.print(_table(keys))


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id (from `keys list`)")]) -> None:
    """Revoke a key; every instance stops accepting it."""
    revoked = _run(settings_or_exit(), lambda auth: auth.revoke_key(key_id))
    console.print(_table([revoked]))


@keys_app.command("generate")
def generate() -> None:
    """Print a fresh random key, e.g. for security.api-keys.bootstrap-admin-key."""
    print(generate_key())
