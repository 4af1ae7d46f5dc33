"""The console notice that hands over the first admin key of a fresh development database."""

from __future__ import annotations

from mlplatform.settings import ServerSettings

ANY_ADDRESS = {"", "0.0.0.0", "::"}


def server_url(server: ServerSettings) -> str:
    """Where a client on this machine reaches the server."""
    host = "127.0.0.1" if server.host in ANY_ADDRESS else server.host
    return f"http://{f'[{host}]' if ':' in host else host}:{server.port}"


def first_admin_key_notice(key: str, url: str) -> str:
    """The key and how to use it between two rules. Plain ASCII (a console may not take Unicode) and no right
    border, so a narrow terminal's wrapping breaks nothing and a copied line has no trailing padding."""
    lines = [
        "No admin API key existed, so mlplatform created one for this development database.",
        "It is shown only this once and stored only as a hash: copy it now.",
        "",
        f"    {key}",
        "",
        "Use it with the command line:",
        f"    export MLPLATFORM_URL={url}",
        f"    export MLPLATFORM_API_KEY={key}",
        "    mlplatform models list",
        "or over HTTP:",
        f'    curl -H "X-API-Key: {key}" {url}/api/ml/models',
        "",
        "Lost it? From this folder: mlplatform keys create --name me --role admin --owner me",
        "The prod profile never does this; security.api-keys.create-first-admin-key: false turns it off.",
    ]
    rule = "+" + "-" * (max(len(line) for line in lines) + 2)
    return "\n".join([rule, *(f"| {line}".rstrip() for line in lines), rule])
