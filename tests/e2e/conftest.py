"""The real server process: `mlplatform serve` started on a free port, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

REPO = Path(__file__).parents[2]
MLPLATFORM = str(Path(sys.executable).parent / "mlplatform")


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLPLATFORM_", "SPRING_", "DB_", "REDIS_"))
    }
    env.update(MLPLATFORM_CONFIG_DIR=str(REPO / "config"), **extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLPLATFORM, *args],
        env=clean_environment(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    port: int
    log: Path
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def wait_for(self, path: str, status: int = 200, timeout: float = 90) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                response = self.get(path)
                if response.status_code == status:
                    return response
                last = response.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.2)
        pytest.fail(f"{path} did not answer {status} within {timeout}s (last: {last}):\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    started: list[ServerProcess] = []

    def start(
        env: dict[str, str] | None = None, cwd: Path | None = None, port: int | None = None
    ) -> ServerProcess:
        """A server on `port` (a free one by default; the same one again to restart an instance)."""
        port = port or free_port()
        log = tmp_path / f"server-{port}-{len(started)}.log"
        workdir = cwd or tmp_path
        with log.open("w") as output:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [MLPLATFORM, "serve", "--port", str(port)],
                env=clean_environment(env or {}),
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
        server = ServerProcess(process=process, port=port, log=log)
        started.append(server)
        return server

    yield start
    for server in started:
        server.terminate()


DASK = str(Path(sys.executable).parent / "dask")


@dataclass
class DaskCluster:
    """A `dask scheduler` and its `dask worker` processes (no nanny: a killed worker stays dead), all on
    127.0.0.1. `workers` maps each worker's address (what a job records as its `worker`) to its process."""

    address: str
    log_dir: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self) -> str:
        """One more worker (1 thread); its address once the scheduler knows it."""
        from distributed import Client

        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        with (self.log_dir / f"worker-{port}.log").open("wb") as log:
            self.workers[address] = subprocess.Popen(
                [DASK, "worker", self.address, "--host", "127.0.0.1", "--worker-port", str(port)]
                + ["--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"worker-{port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with Client(self.address, timeout=60) as client:
            deadline = time.monotonic() + 60
            while address not in client.scheduler_info(n_workers=-1)["workers"]:
                assert self.workers[address].poll() is None, self.output(address)
                assert time.monotonic() < deadline, f"worker {address} did not join:\n{self.output(address)}"
                time.sleep(0.1)
        return address

    def pid(self, address: str) -> int:
        return self.workers[address].pid

    def kill(self, address: str) -> None:
        """SIGKILL the worker at `address` (as a crashed machine would go)."""
        process = self.workers.pop(address)
        process.kill()
        process.wait()

    def output(self, address: str) -> str:
        port = address.rsplit(":", 1)[1]
        return (self.log_dir / f"worker-{port}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            process.terminate()
        for process in [*self.workers.values(), self.scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A real Dask cluster of separate processes: a scheduler and two single-threaded workers. A test that
    kills a worker starts a replacement (`start_worker`), so the next test finds two again."""
    log_dir = tmp_path_factory.mktemp("dask")
    port = free_port()
    with (log_dir / "scheduler.log").open("wb") as log:
        scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    cluster = DaskCluster(address=f"tcp://127.0.0.1:{port}", log_dir=log_dir, scheduler=scheduler)
    try:
        cluster.start_worker()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()
