"""`mlplatform serve`'s uvicorn: the options it runs with, and what SIGTERM does first."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from types import SimpleNamespace

import uvicorn

from mlplatform.health import Lifecycle
from mlplatform.server import FACTORY, KEEP_ALIVE_SECONDS, DrainingServer, uvicorn_config
from mlplatform.settings import Settings

NGINX_SITE = Path(__file__).parents[2] / "deploy" / "nginx" / "mlplatform.conf"


def test_sigterm_turns_readiness_503_before_uvicorn_starts_to_stop() -> None:
    lifecycle = Lifecycle(started=True)
    fastapi_app = SimpleNamespace(state=SimpleNamespace(platform=SimpleNamespace(lifecycle=lifecycle)))
    config = uvicorn.Config(FACTORY, factory=True, log_config=None)
    config.loaded_app = SimpleNamespace(app=SimpleNamespace(app=fastapi_app))  # inside uvicorn's wrappers
    server = DrainingServer(config)
    server.handle_exit(signal.SIGTERM, None)
    assert lifecycle.draining
    assert server.should_exit and not server.force_exit  # a graceful stop: in-flight requests finish


def test_the_grace_period_is_the_setting() -> None:
    options = uvicorn_config(Settings.model_validate({"server": {"graceful-shutdown-seconds": 12}}))
    assert options["timeout_graceful_shutdown"] == 12
    assert options["timeout_keep_alive"] == KEEP_ALIVE_SECONDS


def test_the_shipped_nginx_config_closes_idle_connections_before_the_server_does() -> None:
    found = re.search(r"^\s*keepalive_timeout (\d+)s;", NGINX_SITE.read_text(), flags=re.MULTILINE)
    assert found is not None
    assert int(found[1]) < KEEP_ALIVE_SECONDS
