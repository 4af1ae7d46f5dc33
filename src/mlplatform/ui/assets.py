"""The console's static files: our CSS, and the vendored htmx and uPlot (copied from their npm packages by
`make ui-assets`, shipped in the wheel). Read once, kept in memory, answered with an ETag."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from starlette.responses import Response

from mlplatform.errors import NotFound

STATIC = Path(__file__).parent / "static"
VENDORED = ("vendor/htmx.min.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class Assets:
    """Every file under `static/`, by its path there; nothing outside it can be named."""

    def __init__(self, folder: Path = STATIC) -> None:
        self.files: dict[str, Asset] = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                body = path.read_bytes()
                media = (
                    TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                )
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self.files[path.relative_to(folder).as_posix()] = Asset(body, media, etag)

    def missing(self) -> list[str]:
        """Vendored files this build lacks (`make ui-assets` was not run)."""
        return [name for name in VENDORED if name not in self.files]


def serve_asset(request: Request, path: str) -> Response:
    assets: Assets = request.app.state.ui.assets
    found = assets.files.get(path)
    if found is None:
        raise NotFound(f"no console file {path[:100]!r}", details={"field": "path"})
    headers = {
        "ETag": found.etag,
        "Cache-Control": "public, max-age=300",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
