"""Run uvicorn from `server.*`: connection limits, backlog, and a graceful, draining shutdown."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from mlplatform import db
from mlplatform.health import STARTED_MARK
from mlplatform.httpwire import http_protocol
from mlplatform.metrics import MULTIPROCESS_ENV
from mlplatform.settings import Settings

FACTORY = "mlplatform.app:app_from_environment"
# An idle keep-alive connection is closed after this long. A proxy in front should close its idle connections
# sooner (nginx `keepalive_timeout` in the upstream block: deploy/nginx/mlplatform.conf), so that it never
# sends a request down a connection this server is closing at that moment.
KEEP_ALIVE_SECONDS = 5


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: readiness turns 503 and answers carry `Connection: close` at once; then the server
    stops accepting connections, in-flight requests finish (idle keep-alive connections are left for their
    clients to close: `httpwire`), the app's shutdown writes queued prediction logs, and the process exits."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        app = getattr(self.config, "loaded_app", None)
        platform = _find_platform(app)
        if platform is not None:
            platform.lifecycle.draining = True
        super().handle_exit(sig, frame)


def _find_platform(app: Any) -> Any:
    # uvicorn wraps the app in its own middleware; walk `.app` links to the FastAPI instance.
    for _ in range(10):
        if app is None:
            return None
        state = getattr(app, "state", None)
        if state is not None and hasattr(state, "platform"):
            return state.platform
        app = getattr(app, "app", None)
    return None


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    server = settings.server
    return {
        "host": server.host,
        "port": server.port,
        "workers": server.workers,
        "limit_concurrency": server.max_connections,
        "backlog": server.accept_count,
        "timeout_graceful_shutdown": server.graceful_shutdown_seconds,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "loop": "uvloop",
        "http": http_protocol(),
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "proxy_headers": True,
        "factory": True,
    }


def serve(settings: Settings) -> None:
    options = uvicorn_config(settings)
    if options["workers"] > 1:
        with multiprocess_metrics():
            if settings.embedded:  # once here, rather than every worker racing to migrate the same file
                db.upgrade(settings.database)
            uvicorn.run(FACTORY, **options)
        return
    options.pop("workers")
    DrainingServer(uvicorn.Config(FACTORY, **options)).run()


def export_overrides(values: dict[str, str]) -> None:
    """Hand command-line overrides to the app factory (and to worker processes) through the environment."""
    os.environ.update(values)


@contextlib.contextmanager
def multiprocess_metrics() -> Iterator[Path]:
    """The folder where the worker processes keep their metric values (`PROMETHEUS_MULTIPROC_DIR`, read by
    prometheus_client when a worker imports it). A fresh one, removed when the server stops; or the operator's
    own, given through that variable, emptied first as prometheus_client asks between runs."""
    given = os.environ.get(MULTIPROCESS_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.glob("*.db"), *folder.glob(f"{STARTED_MARK}*")]:
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="mlplatform-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
