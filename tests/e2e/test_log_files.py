"""`logging.file.*`: the log file rotates past `max-size`, keeps `max-history` old files, and stays whole when
several processes (`server.workers`) write it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import REPO, ServerProcess

# One process of the server, as far as logging goes: configure_logging from settings, then `count` records.
WRITER = """
import logging, os, sys
from mlplatform.logging import configure_logging
from mlplatform.settings import LoggingSettings
name, size, history, tag, count, payload = sys.argv[1:]
settings = {"format": "json", "file": {"name": name, "max-size": size, "max-history": history}}
configure_logging(LoggingSettings.model_validate(settings), stream=open(os.devnull, "w"))
log = logging.getLogger("writer")
for i in range(int(count)):
    log.info("%s %d %s", tag, i, "x" * int(payload))
"""


def writer(
    log: Path, size: str, history: int, tag: str, count: int, payload: int = 80
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    args = [str(log), size, str(history), tag, str(count), str(payload)]
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], env=env, stderr=subprocess.PIPE)


def run(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()


def files(log: Path) -> dict[str, int]:
    """Every file of the log (current and rotated) and its size."""
    rotated = re.compile(re.escape(log.name) + r"(\.\d+)?")
    return {p.name: p.stat().st_size for p in log.parent.iterdir() if rotated.fullmatch(p.name)}


def records(path: Path) -> list[tuple[str, int]]:
    found = []
    for line in path.read_text().splitlines():
        tag, number, _ = json.loads(line)["event"].split(" ")  # a torn or interleaved line fails here
        found.append((tag, int(number)))
    return found


def test_rotates_past_max_size_and_keeps_max_history(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "application.log"  # the folder is created on start
    run(writer(log, "2KB", 3, "a", 300))
    sizes = files(log)
    assert set(sizes) == {"application.log", "application.log.1", "application.log.2", "application.log.3"}
    assert all(size <= 2048 for size in sizes.values()), sizes
    # Newest in application.log, then .1, .2, .3: together an unbroken run of the last records written.
    oldest_first = ("application.log.3", "application.log.2", "application.log.1", "application.log")
    kept = [number for name in oldest_first for _, number in records(log.parent / name)]
    assert kept == list(range(300 - len(kept), 300))


def test_a_record_larger_than_max_size_gets_a_file_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "application.log"
    run(writer(log, "1KB", 3, "a", 2, payload=3000))
    # Each in a file of its own, and no empty file rotated before the first.
    assert set(files(log)) == {"application.log.1", "application.log"}
    assert records(log.parent / "application.log.1") == [("a", 0)]
    assert records(log) == [("a", 1)]


def test_several_processes_share_one_file_and_lose_nothing(tmp_path: Path) -> None:
    log = tmp_path / "application.log"
    tags, count = ("a", "b", "c"), 400
    run(*[writer(log, "8KB", 100, tag, count) for tag in tags])  # room for everything: nothing may be dropped
    sizes = files(log)
    assert len(sizes) > 3 and all(size <= 8192 for size in sizes.values()), sizes
    written = [record for name in sizes for record in records(log.parent / name)]
    assert sorted(written) == sorted((tag, i) for tag in tags for i in range(count))


def test_serve_with_two_workers_rotates_its_log_file(
    start_server: Callable[..., ServerProcess], redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "application.log"
    server = start_server(
        {
            "MLPLATFORM_SERVER__WORKERS": "2",
            "MLPLATFORM_CACHE__URL": redis_url,
            "MLPLATFORM_LOGGING__FORMAT": "json",
            "MLPLATFORM_LOGGING__LEVEL__ROOT": "DEBUG",  # every database statement: plenty to rotate
            "MLPLATFORM_LOGGING__FILE__NAME": str(log),
            "MLPLATFORM_LOGGING__FILE__MAX_SIZE": "16KB",
            "MLPLATFORM_LOGGING__FILE__MAX_HISTORY": "2",
        }
    )
    server.wait_for("/actuator/health/readiness")
    for _ in range(20):  # requests both workers answer and log (an unknown key is looked up in the database)
        server.get("/api/ml/models", headers={"X-API-Key": "mlp_not-a-key-0123456789abcdefghij"})
    assert server.terminate() in (0, -15)
    sizes = files(log)
    assert set(sizes) == {"application.log", "application.log.1", "application.log.2"}, sizes
    assert all(size <= 16 * 1024 for size in sizes.values()), sizes
    for name in sizes:
        assert all(json.loads(line)["timestamp"] for line in (log.parent / name).read_text().splitlines())
