"""Scaling out: two `mlplatform serve` instances on PostgreSQL, Redis and S3 behind a real nginx.

Restarted one at a time under steady load, they fail no request and lose no prediction log; an alias moved
through one is served by both within a second; a key's rate limit holds across both.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from mlplatform import db
from mlplatform.settings import DatabaseSettings
from tests.e2e.conftest import REPO, ServerProcess
from tests.services import free_port

StartServer = Callable[..., ServerProcess]
ADMIN_KEY = "mlp_e2e-scale-out-admin-key-0123456789"
KEY = {"role": "predictor", "owner": "scale-out"}
NGINX_SITE = REPO / "deploy" / "nginx" / "mlplatform.conf"
STOPPED_BY_SIGTERM = {0, -signal.SIGTERM}
CLIENTS = 3  # threads sending predictions through nginx, one at a time each, without pause
FEATURES = ["a", "b", "c"]


def nginx_binary() -> str:
    found = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin")
    if found is None:
        pytest.fail("nginx is not installed: `make nginx` installs it (Debian package nginx)", pytrace=False)
    return found


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def nginx_site(ports: list[int], listen: int) -> str:
    """deploy/nginx/mlplatform.conf with its example instances and port replaced by loopback ones."""
    site = NGINX_SITE.read_text()
    servers = re.findall(r"^    server 10\.0\.0\.\d+:8080 ", site, flags=re.MULTILINE)
    assert len(servers) == len(ports), "the shipped config should list two example instances"
    for example, port in zip(servers, ports, strict=True):
        site = site.replace(example, f"    server 127.0.0.1:{port} ", 1)
    site, listens = re.subn(r"^    listen 80;", f"    listen 127.0.0.1:{listen};", site, flags=re.MULTILINE)
    assert listens == 1
    return site


def start_nginx(folder: Path, ports: list[int]) -> Nginx:
    """nginx in the foreground with its own prefix: pid, logs and temporary files under `folder`."""
    folder.mkdir()
    port = free_port()
    (folder / "mlplatform.conf").write_text(nginx_site(ports, port))
    (folder / "nginx.conf").write_text(
        f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format upstreams '$status $upstream_addr $upstream_status';
    access_log {folder}/access.log upstreams;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/mlplatform.conf;
}}
"""
    )
    binary = nginx_binary()
    config = ["-c", str(folder / "nginx.conf"), "-p", str(folder), "-e", str(folder / "error.log")]
    checked = subprocess.run([binary, *config, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([binary, *config, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    nginx = Nginx(process=process, port=port, folder=folder)
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, f"nginx exited:\n{nginx.output()}"
        try:
            if httpx.get(f"{nginx.base_url}/actuator/health/liveness", timeout=5).status_code == 200:
                return nginx
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"nginx did not answer:\n{nginx.output()}"
        time.sleep(0.1)


@dataclass
class Load:
    """Client threads each sending one prediction after another through nginx, until stopped."""

    url: str
    key: str
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # request id, status, body or error
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for client in range(CLIENTS):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, client: int) -> None:
        rng = np.random.default_rng(client)
        with httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30) as http:
            sent = 0
            while not self.stopping.is_set():
                request_id = f"load-{client}-{sent}"
                body = {"model": "m", "features": rng.normal(size=3).tolist(), "request_id": request_id}
                try:
                    response = http.post("/api/ml/predict", json=body)
                    answer = (request_id, response.status_code, response.text)
                except httpx.HTTPError as exc:
                    answer = (request_id, 0, f"{type(exc).__name__}: {exc}")
                with self.lock:
                    self.answers.append(answer)
                sent += 1

    def succeeded(self) -> int:
        with self.lock:
            return sum(1 for answer in self.answers if answer[1] == 200)

    def failed(self) -> list[tuple[str, int, str]]:
        with self.lock:
            return [answer for answer in self.answers if answer[1] != 200]

    def wait_for_answers(self, count: int, timeout: float = 30) -> None:
        target = self.succeeded() + count
        deadline = time.monotonic() + timeout
        while self.succeeded() < target:
            assert time.monotonic() < deadline, f"the load stalled at {self.succeeded()} answers"
            assert self.failed() == [], self.failed()[:5]
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


def register_version(server: ServerProcess, tmp_path: Path, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(200, 3))
    model = LogisticRegression().fit(x, (x[:, seed % 3] > 0).astype(int))
    artifact = tmp_path / f"model-{seed}.skops"
    skops.io.dump(model, artifact)
    with artifact.open("rb") as file:
        response = httpx.post(
            f"{server.base_url}/api/ml/models/m/versions",
            files={"file": ("model.skops", file, "application/octet-stream")},
            data={"metadata": json.dumps({"feature_names": FEATURES})},
            headers={"X-API-Key": ADMIN_KEY},
            timeout=60,
        )
    assert response.status_code == 201, response.text


def admin(method: str, server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method,
        server.base_url + path,
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )


def served_version(server: ServerProcess) -> str:
    body = {"model": "m", "features": [0.1, 0.2, 0.3]}
    response = admin("POST", server, "/api/ml/predict", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


def logged_request_ids(postgres_dsn: str, postgres_url: str) -> list[str]:
    schema = re.search(r"search_path%3D(\w+)", postgres_url)
    assert schema is not None
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT request_id FROM \"{schema[1]}\".prediction_logs WHERE request_id LIKE 'load-%%'"
        ).fetchall()
    return sorted(row[0] for row in rows)


def first_answer(server: ServerProcess, key: str) -> httpx.Response:
    """The first answer a (re)started instance gives a prediction, as soon as its port opens."""
    deadline = time.monotonic() + 60
    while True:
        assert server.process.poll() is None, server.output()
        try:
            return httpx.post(
                f"{server.base_url}/api/ml/predict",
                json={"model": "m", "features": [0.1, 0.2, 0.3]},
                headers={"X-API-Key": key},
                timeout=30,
            )
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{server.base_url} never answered:\n{server.output()}"
            time.sleep(0.01)


def upstream_errors(nginx: Nginx) -> list[str]:
    """nginx's errors talking to an instance, but for refused connections: a request nginx had sent and then
    lost (a reset, a connection closed before the answer) was read by no instance, or by one that died."""
    lines = (nginx.folder / "error.log").read_text().splitlines()
    return [
        line
        for line in lines
        if "[error]" in line and "(111: Connection refused)" not in line and not resent_prediction(line)
    ]


def resent_prediction(line: str) -> bool:
    """A prediction on a connection the kernel reset because it was still in the accept backlog when the
    stopping instance closed its listener (a window no server can close): nginx resends predictions
    (`non_idempotent` on their location), and the test checks that none failed and each was logged once.
    Idle keep-alive connections are not reset at shutdown (tests/unit/test_httpwire.py guards that)."""
    return "(104: Connection reset by peer)" in line and '"POST /api/ml/predict' in line


def wait_until_nginx_sends_to(nginx: Nginx, port: int, since: int, load: Load) -> None:
    """nginx has no readiness checks: it takes an instance back once a request to it succeeds, up to
    `fail_timeout` after it last failed. The next instance may stop only then, as an operator would wait."""
    served = re.compile(rf"^200 127\.0\.0\.1:{port} 200$", flags=re.MULTILINE)
    deadline = time.monotonic() + 30
    while not served.search((nginx.folder / "access.log").read_text()[since:]):
        assert time.monotonic() < deadline, f"nginx sends nothing to :{port}:\n{nginx.output()}"
        assert load.failed() == [], load.failed()[:5]
        time.sleep(0.1)


def test_two_instances_behind_nginx_restart_one_at_a_time_under_load_and_lose_nothing(
    start_server: StartServer,
    postgres_dsn: str,
    postgres_url: str,
    redis_url: str,
    s3_url: str,
    s3_credentials: dict[str, str],
    tmp_path: Path,
) -> None:
    db.upgrade(DatabaseSettings(url=postgres_url))  # outside the embedded default, an operator's step
    environment = {
        "MLPLATFORM_DATABASE__URL": postgres_url,
        "MLPLATFORM_CACHE__URL": redis_url,
        # Generous on a shared test machine: a Redis call past the bound falls back to per-instance rate
        # limits, which is right in production and not what this test is about.
        "MLPLATFORM_CACHE__TIMEOUT_MS": "1000",
        "MLPLATFORM_STORAGE__URL": s3_url,
        "MLPLATFORM_STORAGE__ACCESS_KEY_ID": s3_credentials["access-key-id"],
        "MLPLATFORM_STORAGE__SECRET_ACCESS_KEY": s3_credentials["secret-access-key"],
        "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }
    folders = [tmp_path / "a", tmp_path / "b"]  # each instance its own local model cache, as on two hosts
    for folder in folders:
        folder.mkdir()
    servers = [start_server(environment, cwd=folder) for folder in folders]
    for server in servers:
        server.wait_for("/actuator/health/readiness")
    register_version(servers[0], tmp_path, seed=0)
    register_version(servers[0], tmp_path, seed=1)
    assert admin("PUT", servers[0], "/api/ml/models/m/aliases/production", json={"version": 1}).is_success
    for server in servers:  # the second heard of the model and its alias through Redis
        deadline = time.monotonic() + 30
        while "-v1-" not in (version := served_version(server)):
            assert time.monotonic() < deadline, f"{server.base_url} serves {version}"
            time.sleep(0.1)
    # the load is as fast as the box allows: its key may take more than the default 1000/second
    created = admin(
        "POST", servers[0], "/api/admin/api-keys", json=KEY | {"name": "load", "rate_limit": "100000/second"}
    )
    assert created.status_code == 201, created.text
    nginx = start_nginx(tmp_path / "nginx", [server.port for server in servers])
    load = Load(url=nginx.base_url, key=created.json()["key"])
    try:
        # A rolling restart under steady load. Restarted instances load the production model before they
        # call themselves ready, as operators configure them (`ml.models.preload`).
        load.start()
        load.wait_for_answers(30)
        for index, server in enumerate(servers):
            assert server.terminate() in STOPPED_BY_SIGTERM, server.output()
            assert "stopped" in server.output()  # its shutdown ran to the end: prediction logs written
            since = len((nginx.folder / "access.log").read_text())
            servers[index] = start_server(
                environment | {"MLPLATFORM_ML__MODELS__PRELOAD": "m"}, cwd=folders[index], port=server.port
            )
            # nginx has no readiness checks: what a starting instance answers must be right, or a 503 that
            # nginx passes on to the other instance (a 404 for a model it has not read yet would not be).
            first = first_answer(servers[index], load.key)
            assert first.status_code in (200, 503), first.text
            servers[index].wait_for("/actuator/health/readiness")
            wait_until_nginx_sends_to(nginx, server.port, since, load)
        load.wait_for_answers(30)
    finally:
        load.stop()
        nginx.stop()
    assert load.failed() == [], f"{len(load.failed())} of {len(load.answers)} failed:\n{load.failed()[:5]}"
    assert upstream_errors(nginx) == []
    answered = sorted(answer[0] for answer in load.answers)
    deadline = time.monotonic() + 20
    while len(logged := logged_request_ids(postgres_dsn, postgres_url)) < len(answered):
        assert time.monotonic() < deadline, f"{len(answered) - len(logged)} prediction logs lost"
        time.sleep(0.2)
    # Every answered prediction logged exactly once: none lost, none resent by nginx and logged twice.
    assert logged == answered

    # An alias moved through one instance is served by both within a second (the version warmed first on
    # each: this measures the news travelling, not a model loading).
    for server in servers:
        assert admin(
            "POST", server, "/api/ml/predict", json={"model": "m/2", "features": [0, 0, 0]}
        ).is_success
    moved = admin("PUT", servers[0], "/api/ml/models/m/aliases/production", json={"version": 2})
    assert moved.is_success, moved.text
    after: dict[int, float] = {}
    began = time.monotonic()
    while len(after) < len(servers) and time.monotonic() - began < 5:
        for server in servers:
            if server.port not in after and "-v2-" in served_version(server):
                after[server.port] = time.monotonic() - began
    assert len(after) == len(servers) and max(after.values()) < 1.0, after

    # A key's rate limit holds across both instances: together they accept the limit, not twice it.
    limited = admin(
        "POST", servers[0], "/api/admin/api-keys", json=KEY | {"name": "few", "rate_limit": "20/hour"}
    )
    assert limited.status_code == 201, limited.text
    statuses: dict[int, list[int]] = {server.port: [] for server in servers}
    for attempt in range(60):
        server = servers[attempt % 2]
        response = httpx.post(
            f"{server.base_url}/api/ml/predict",
            json={"model": "m", "features": [0.1, 0.2, 0.3]},
            headers={"X-API-Key": limited.json()["key"]},
            timeout=30,
        )
        statuses[server.port].append(response.status_code)
    every = [status for answers in statuses.values() for status in answers]
    assert sorted(set(every)) == [200, 429], statuses
    assert every.count(200) == 20, statuses
    assert all(answers.count(200) >= 5 for answers in statuses.values()), statuses  # both took part
