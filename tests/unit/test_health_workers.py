"""Readiness of a server of several worker processes: ready only when every one of them has started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.health import STARTED_MARK, HealthService, Lifecycle
from mlplatform.metrics import Metrics


def health(lifecycle: Lifecycle) -> HealthService:
    return HealthService(
        checks={},
        descriptions={},
        lifecycle=lifecycle,
        metrics=Metrics(application="test", environment="test"),
        readiness_components=[],
    )


async def test_ready_only_once_every_worker_process_has_started(tmp_path: Path) -> None:
    this = Lifecycle(workers=2, folder=str(tmp_path))
    service = health(this)
    assert await service.readiness() == (False, {"lifecycle": "starting"})
    this.mark_started()
    assert this.workers_started() == 1
    ready, reasons = await service.readiness()
    assert not ready and reasons == {"lifecycle": "starting: 1 of 2 worker processes started"}

    # The other worker, a real process of its own, marks itself started: now the instance is ready.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"{STARTED_MARK}{other.pid}").touch()
        assert this.workers_started() == 2
        assert await service.readiness() == (True, {})
    finally:
        other.kill()
        other.wait()
    # A worker that died (its mark left behind) counts no more, whatever the folder holds.
    (tmp_path / f"{STARTED_MARK}notapid").touch()
    assert this.workers_started() == 1
    assert not (await service.readiness())[0]

    this.unmark()  # at shutdown
    assert not (tmp_path / f"{STARTED_MARK}{os.getpid()}").exists() and this.workers_started() == 0


async def test_a_single_process_server_needs_no_folder() -> None:
    lifecycle = Lifecycle()
    lifecycle.mark_started()
    lifecycle.unmark()
    assert lifecycle.workers_started() == 1
    assert await health(lifecycle).readiness() == (True, {})


async def test_a_folder_that_cannot_be_written_leaves_the_instance_not_ready(tmp_path: Path) -> None:
    lifecycle = Lifecycle(workers=2, folder=str(tmp_path / "gone"))
    lifecycle.mark_started()  # logged, not raised: the rest of start-up goes on
    assert lifecycle.started and lifecycle.workers_started() == 0
    ready, reasons = await health(lifecycle).readiness()
    assert not ready and reasons == {"lifecycle": "starting: 0 of 2 worker processes started"}


def test_an_app_without_serves_shared_folder_counts_only_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlplatform.app import build_platform
    from mlplatform.metrics import MULTIPROCESS_ENV
    from mlplatform.settings import Settings

    monkeypatch.delenv(MULTIPROCESS_ENV, raising=False)
    settings = Settings.model_validate(
        {
            "server": {"workers": 2},
            "cache": {"url": "redis://127.0.0.1:6379/0"},
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"},
            "storage": {"url": f"file://{tmp_path}/store"},
        }
    )
    lifecycle = build_platform(settings).lifecycle  # nothing connects until used
    assert (lifecycle.workers, lifecycle.folder) == (1, None)
