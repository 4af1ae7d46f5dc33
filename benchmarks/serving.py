"""Serving benchmark: mlplatform against Seldon MLServer 1.7.1 on the same box, in the same run, under wrk."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import joblib
import lightgbm
import numpy as np
import redis
import skops.io
import xgboost
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPTS = ROOT / "benchmarks" / "wrk"
MLSERVER_TEMPLATES = ROOT / "benchmarks" / "mlserver"
RESULTS = ROOT / "benchmarks" / "results"
N_FEATURES = 30
BATCH_ROWS = 1000
SINGLE_BODIES, BATCH_BODIES = 1000, 4  # distinct base rows: 1,000 single rows, 4 batches of 1,000 rows
CHECK_ROWS = 200
MIN_AGREEMENT = 0.99
BUSY_LOAD = 1.0  # 1-minute load average above which the box is not quiet enough to trust the numbers
COUNTERS = (
    "ml_experiment_shadow_dropped",
    "ml_predictions",
    "ml_predictions_errors",
    "ml_predictions_fallback",
    "ml_prediction_cache_hits",
    "ml_prediction_cache_misses",
    "ml_prediction_log_written",
    "ml_prediction_log_dropped",
)
MARKER = "@@"  # where benchmarks/wrk/common.lua puts a digit of each request's sequence number
UNIQUE_DIGITS = 7  # marked features per row: must match DIGITS in benchmarks/wrk/common.lua
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
console = Console()
Rows = NDArray[np.float64]
Bodies = dict[tuple[str, str, str], Path]  # (server, model, kind) → bodies file
# Request kinds: one row per request; a batch through each server's own batch API (mlplatform's REST
# `/api/ml/predict/batch`, MLServer's V2 `infer`); a batch through V2 `infer` on both, with the same body.
SINGLE, BATCH, V2_BATCH = "single", "batch", "v2 batch"
KINDS = (SINGLE, BATCH, V2_BATCH)


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: int
    warmup_seconds: int
    single_connections: tuple[int, ...] = (1, 8, 32)
    batch_connections: tuple[int, ...] = (1, 8)

    def levels(self, kind: str) -> tuple[int, ...]:
        return self.single_connections if kind == SINGLE else self.batch_connections


PROFILES = {"full": Profile("full", 12, 3), "quick": Profile("quick", 3, 1)}


@dataclass(frozen=True)
class ModelSpec:
    key: str
    title: str
    mlplatform_file: str
    v2_outputs: tuple[str, ...]  # what MLServer is asked for (none: the runtime's only output)

    @property
    def name(self) -> str:
        return f"bench-{self.key}"


MODELS = (
    ModelSpec("sklearn", "RandomForest 100 trees depth 10", "model.skops", ("predict_proba",)),
    ModelSpec("xgboost", "XGBoost 200 trees", "model.ubj", ("predict_proba",)),
    ModelSpec("lightgbm", "LightGBM 200 trees", "model.txt", ()),
)


@dataclass(frozen=True)
class Answer:
    classes: NDArray[np.int64]
    positive: NDArray[np.float64]  # probability of class 1


@dataclass(frozen=True)
class Check:
    model: str
    server: str
    agreement: float  # share of check rows where the server gives the model's own class
    single_matches_batch: bool
    max_probability_difference: float


@dataclass(frozen=True)
class LoadTarget:
    script: Path
    url: str
    bodies: Path
    args: tuple[str, ...]  # the script's own, after the bodies file and the sequence offset


@dataclass
class Measurement:
    server: str
    model: str
    kind: str
    connections: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    rows_per_s: float
    latency_ms: dict[str, float]
    server_cpu_us_per_request: float
    client_cpu_us_per_request: float  # wrk's own CPU, for scale
    idle_server_cpu_s: float  # what the other, idle server burnt meanwhile
    server_rss_mb: float
    steal_percent: float  # CPU time the hypervisor gave to other guests during the run, of all CPU time


# ----------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        tree.append(pid := queue.pop())
        queue.extend(children.get(pid, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and of its children already reaped (cutime + cstime)."""
    fields = stat_fields(pid)
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS if fields else 0.0


def box_cpu_ticks() -> tuple[int, int]:
    """(steal, total) ticks of all CPUs since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return values[7], sum(values)


def rss_mb(pid: int) -> float:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class ServerProcess:
    """A server started in its own session: measured as a whole process tree, stopped as one."""

    def __init__(self, command: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in process_tree(self.popen.pid))

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in process_tree(self.popen.pid))

    def wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.log.stem} exited with {self.popen.returncode}")
            with suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{url} not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=20)
        with suppress(ProcessLookupError):  # workers left behind in the session we created
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


# ------------------------------------------------------------------------------------------------- servers


def features(row: Rows) -> str:
    marked = len(row) - UNIQUE_DIGITS
    return ", ".join(f"{value:.4f}" + (MARKER if i >= marked else "") for i, value in enumerate(row))


def expect(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        request = response.request
        raise RuntimeError(f"{request.method} {request.url}: {response.status_code} {response.text[:500]}")
    return response.json()


class Server(ABC):
    """One contender: starts, answers the correctness check, and names its wrk script and bodies."""

    label: str
    key: str
    process: ServerProcess
    # The kind whose run stands for each kind: a server whose own batch API is V2 `infer` runs it once.
    measured: dict[str, str] = {kind: kind for kind in KINDS}

    @abstractmethod
    def start(self, work: Path, artifacts: dict[str, Path]) -> None:
        """Start the server on free 127.0.0.1 ports, without waiting."""

    def cpu_seconds(self) -> float:
        """CPU time of the server's processes, and of any service it runs on (Redis) counted with it."""
        return self.process.cpu_seconds()

    @abstractmethod
    def wait(self) -> None:
        """Return once the server is ready and serves every model."""

    @abstractmethod
    def predict(self, spec: ModelSpec, rows: Rows, *, batch: bool) -> Answer:
        """Predict `rows` in one batch request, or in one request per row."""

    @abstractmethod
    def body(self, spec: ModelSpec, rows: Rows, kind: str) -> str:
        """One request body on one line, each row's last UNIQUE_DIGITS features followed by the marker."""

    @abstractmethod
    def target(self, spec: ModelSpec, kind: str, bodies: Path) -> LoadTarget:
        """The wrk script, base URL and script arguments for one request kind."""


class MLServer(Server):
    label = "MLServer 1.7.1"
    key = "mlserver"
    measured = {SINGLE: SINGLE, BATCH: BATCH, V2_BATCH: BATCH}

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.url = ""

    def start(self, work: Path, artifacts: dict[str, Path]) -> None:
        folder = work / "mlserver"  # the model folders are already there (see `save`)
        settings = json.loads((MLSERVER_TEMPLATES / "settings.json").read_text())
        settings |= {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
        (folder / "settings.json").write_text(json.dumps(settings, indent=2))
        self.url = f"http://127.0.0.1:{settings['http_port']}"
        env = {**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}"}
        command = [str(self.venv / "bin" / "mlserver"), "start", str(folder)]
        self.process = ServerProcess(command, cwd=folder, env=env, log=work / "mlserver.log")

    def wait(self) -> None:
        self.process.wait_ready(f"{self.url}/v2/health/ready", timeout=180)

    def predict(self, spec: ModelSpec, rows: Rows, *, batch: bool) -> Answer:
        chunks = [rows] if batch else [rows[i : i + 1] for i in range(len(rows))]
        data = []
        for chunk in chunks:
            outputs = v2_infer(self.url, spec, chunk, {})["outputs"]
            data += outputs[0]["data"]
        values = np.asarray(data, dtype=np.float64)
        positive = values.reshape(len(rows), 2)[:, 1] if spec.v2_outputs else values
        return Answer((positive > 0.5).astype(np.int64), positive)

    def body(self, spec: ModelSpec, rows: Rows, kind: str) -> str:
        return v2_body(spec, rows)

    def target(self, spec: ModelSpec, kind: str, bodies: Path) -> LoadTarget:
        return LoadTarget(WRK_SCRIPTS / "v2_infer.lua", self.url, bodies, (spec.name,))


def v2_body(spec: ModelSpec, rows: Rows) -> str:
    """The V2 `infer` body MLServer gets: one FP32 tensor, and the outputs its runtime is asked for."""
    data = ", ".join(features(row) for row in rows)
    tensor = f'"name": "input-0", "shape": [{len(rows)}, {N_FEATURES}], "datatype": "FP32", "data": [{data}]'
    outputs = ", ".join(f'{{"name": "{name}"}}' for name in spec.v2_outputs)
    return f'{{"inputs": [{{{tensor}}}], "outputs": [{outputs}]}}'


def v2_infer(url: str, spec: ModelSpec, rows: Rows, headers: dict[str, str]) -> Any:
    """One V2 `infer` call with the same tensor and outputs as `v2_body`."""
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    body = {"inputs": [tensor], "outputs": [{"name": name} for name in spec.v2_outputs]}
    return expect(httpx.post(f"{url}/v2/models/{spec.name}/infer", json=body, headers=headers, timeout=60))


class Mlplatform(Server):
    label = "mlplatform"
    key = "mlplatform"

    def __init__(self, redis_url: str | None = None, workers: int = 1) -> None:
        self.admin_key = secrets.token_hex(20)
        self.predictor_key = ""
        self.url = ""
        self.artifacts: dict[str, Path] = {}
        self.redis_url, self.workers = redis_url, workers
        self.prefix = f"bench{secrets.token_hex(4)}:"  # this run's keys in a Redis that may hold others

    def cpu_seconds(self) -> float:
        """With Redis, the Redis server's own CPU counts too: it does the work the in-process cache does."""
        if self.redis_url is None:
            return self.process.cpu_seconds()
        client = redis.Redis.from_url(self.redis_url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        return self.process.cpu_seconds() + float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def set_up(self) -> str:
        cache = (
            "in-process cache" if self.redis_url is None else f"Redis at {urlsplit(self.redis_url).hostname}"
        )
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        cache += f" (its CPU counted with mlplatform's), {workers}" if self.redis_url else ""
        return f"SQLite, {cache}, local folder; API keys, rate limits, metrics and prediction logs on"

    def forget_keys(self) -> None:
        if self.redis_url is not None:
            client = redis.Redis.from_url(self.redis_url)
            try:
                for key in client.scan_iter(f"{self.prefix}*", count=1000):
                    client.delete(key)
            finally:
                client.close()

    def start(self, work: Path, artifacts: dict[str, Path]) -> None:
        folder = work / "mlplatform"
        folder.mkdir()
        self.artifacts, port = artifacts, free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "MLPLATFORM_DATABASE__URL": f"sqlite+aiosqlite:///{folder}/bench.db",
            "MLPLATFORM_STORAGE__URL": f"file://{folder}/artifacts",
            "MLPLATFORM_LOGGING__LEVEL__ROOT": "WARNING",
            "MLPLATFORM_CONFIG_DIR": str(ROOT / "config"),
            "MLPLATFORM_SERVER__WORKERS": str(self.workers),
        }
        if self.redis_url is not None:
            separator = "&" if "?" in self.redis_url else "?"
            env["MLPLATFORM_CACHE__URL"] = f"{self.redis_url}{separator}prefix={self.prefix}"
        command = [str(ROOT / ".venv" / "bin" / "mlplatform"), "serve", "--port", str(port)]
        self.process = ServerProcess(command, cwd=folder, env=env, log=work / "mlplatform.log")

    def wait(self) -> None:
        self.process.wait_ready(f"{self.url}/actuator/health/readiness", timeout=180)
        paths = expect(httpx.get(f"{self.url}/openapi.json", timeout=10)).get("paths", {})
        if "post" not in paths.get("/api/ml/predict", {}):
            raise RuntimeError("mlplatform does not serve POST /api/ml/predict yet")
        admin = {"X-API-Key": self.admin_key}
        key = {"name": "bench", "role": "predictor", "owner": "bench", "rate_limit": "1000000/second"}
        response = httpx.post(f"{self.url}/api/admin/api-keys", json=key, headers=admin, timeout=30)
        self.predictor_key = expect(response, 201)["key"]
        for spec in MODELS:
            if spec.key in self.artifacts:
                self.register(spec, self.artifacts[spec.key], admin)

    def register(self, spec: ModelSpec, artifact: Path, headers: dict[str, str]) -> None:
        metadata = json.dumps({"feature_names": [f"f{i}" for i in range(N_FEATURES)]})
        url = f"{self.url}/api/ml/models/{spec.name}/versions"
        with artifact.open("rb") as file:
            upload = {"file": (artifact.name, file, "application/octet-stream")}
            response = httpx.post(
                url, files=upload, data={"metadata": metadata}, headers=headers, timeout=120
            )
        expect(response, 201)

    def counters(self) -> dict[str, float]:
        """Side effects of the run, from /actuator/prometheus: cache hits, logged and dropped predictions."""
        text = httpx.get(
            f"{self.url}/actuator/prometheus", headers={"X-API-Key": self.admin_key}, timeout=30
        ).text
        totals = dict.fromkeys(COUNTERS, 0.0)
        for line in text.splitlines():
            name = line.partition("{")[0].partition(" ")[0].removesuffix("_total")
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[-1])
        return totals

    def post(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"X-API-Key": self.predictor_key}
        return expect(httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=120))

    def predict(self, spec: ModelSpec, rows: Rows, *, batch: bool) -> Answer:
        if batch:
            answers = self.post("/api/ml/predict/batch", {"model": spec.name, "instances": rows.tolist()})
            predictions = answers["predictions"]
        else:
            predictions = [
                self.post("/api/ml/predict", {"model": spec.name, "features": r.tolist()}) for r in rows
            ]
        classes = np.asarray([int(float(p["prediction"])) for p in predictions], dtype=np.int64)
        return Answer(
            classes, np.asarray([positive_probability(p.get("probabilities")) for p in predictions])
        )

    def predict_v2(self, spec: ModelSpec, rows: Rows) -> Answer:
        """A batch through V2 `infer`, with MLServer's body: LightGBM's then gets every output."""
        outputs = v2_infer(self.url, spec, rows, {"X-API-Key": self.predictor_key})["outputs"]
        found = {output["name"]: output for output in outputs}
        probabilities = np.asarray(found["predict_proba"]["data"], dtype=np.float64).reshape(len(rows), -1)
        return Answer((probabilities[:, 1] > 0.5).astype(np.int64), probabilities[:, 1])

    def body(self, spec: ModelSpec, rows: Rows, kind: str) -> str:
        if kind == SINGLE:
            return f'{{"model": "{spec.name}", "features": [{features(rows[0])}]}}'
        if kind == V2_BATCH:
            return v2_body(spec, rows)
        instances = ", ".join(f"[{features(row)}]" for row in rows)
        return f'{{"model": "{spec.name}", "instances": [{instances}]}}'

    def target(self, spec: ModelSpec, kind: str, bodies: Path) -> LoadTarget:
        if kind == V2_BATCH:
            return LoadTarget(WRK_SCRIPTS / "v2_infer.lua", self.url, bodies, (spec.name, self.predictor_key))
        script = "mlplatform_predict.lua" if kind == SINGLE else "mlplatform_batch.lua"
        return LoadTarget(WRK_SCRIPTS / script, self.url, bodies, (self.predictor_key,))


def positive_probability(probabilities: dict[str, float] | None) -> float:
    if not probabilities:
        return float("nan")
    return float(probabilities.get("1", list(probabilities.values())[-1]))


# ---------------------------------------------------------------------------------------- models and data


def make_dataset() -> tuple[Rows, NDArray[np.int64]]:
    # Four decimals: both servers then see the same values, whether they parse them as float32 or float64.
    x, y = make_classification(n_samples=50_000, n_features=N_FEATURES, random_state=0)
    return np.round(x, 4), y


def train(key: str, x: Rows, y: NDArray[np.int64]) -> Any:
    if key == "sklearn":
        forest = RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=-1, random_state=0).fit(x, y)
        return forest.set_params(n_jobs=None)  # saved as users save it: scikit-learn's default
    if key == "xgboost":
        return xgboost.XGBClassifier(n_estimators=200, random_state=0).fit(x, y)
    return lightgbm.LGBMClassifier(n_estimators=200, random_state=0, verbose=-1).fit(x, y)


def save(spec: ModelSpec, model: Any, work: Path) -> Path:
    """Write MLServer's model folder (from its template) and mlplatform's artifact; return the latter."""
    folder = work / "mlserver" / spec.name
    folder.mkdir(parents=True)
    settings = json.loads((MLSERVER_TEMPLATES / spec.key / "model-settings.json").read_text())
    (folder / "model-settings.json").write_text(json.dumps(settings | {"name": spec.name}, indent=2))
    served = folder / Path(settings["parameters"]["uri"]).name
    artifact = work / "artifacts" / spec.name / spec.mlplatform_file
    artifact.parent.mkdir(parents=True)
    if spec.key == "sklearn":
        joblib.dump(model, served)
        skops.io.dump(model, artifact)
        return artifact
    if spec.key == "xgboost":
        model.save_model(served)
    else:
        model.booster_.save_model(served)
    shutil.copyfile(served, artifact)
    return artifact


def prepare_models(
    specs: Sequence[ModelSpec], x: Rows, y: NDArray[np.int64], work: Path
) -> tuple[dict[str, Path], dict[str, Answer]]:
    """Train, save for both servers, and keep each model's own answers for the check rows."""
    artifacts: dict[str, Path] = {}
    references: dict[str, Answer] = {}
    for spec in specs:
        started = time.monotonic()
        model = train(spec.key, x, y)
        artifacts[spec.key] = save(spec, model, work)
        check = x[:CHECK_ROWS]
        references[spec.key] = Answer(model.predict(check).astype(np.int64), model.predict_proba(check)[:, 1])
        console.print(f"  trained {spec.title} in {time.monotonic() - started:.1f} s")
    return artifacts, references


def write_bodies(servers: Sequence[Server], specs: Sequence[ModelSpec], x: Rows, work: Path) -> Bodies:
    """Single-row bodies and batch bodies, per server and model: wrk sends them in turn."""
    (folder := work / "bodies").mkdir()
    batches = [x[i : i + BATCH_ROWS] for i in range(0, BATCH_BODIES * BATCH_ROWS, BATCH_ROWS)]
    chunks = {SINGLE: [x[i : i + 1] for i in range(SINGLE_BODIES)], BATCH: batches, V2_BATCH: batches}
    paths: Bodies = {}
    for server in servers:
        for spec in specs:
            for kind, bodies in chunks.items():
                if server.measured[kind] != kind:
                    continue
                name = f"{server.key}-{spec.key}-{kind.replace(' ', '-')}.txt"
                path = paths[(server.key, spec.key, kind)] = folder / name
                path.write_text("".join(server.body(spec, rows, kind) + "\n" for rows in bodies))
    return paths


# --------------------------------------------------------------------------------------------- measuring


def check_agreement(
    servers: Sequence[Server], specs: Sequence[ModelSpec], x: Rows, references: dict[str, Answer]
) -> list[Check]:
    """Every server must answer, and give the model's own class for (nearly) every check row."""
    checks = []
    for spec in specs:
        reference = references[spec.key]
        for server in servers:
            batch = server.predict(spec, x[:CHECK_ROWS], batch=True)
            single = server.predict(spec, x[:10], batch=False)
            check = Check(
                model=spec.key,
                server=server.label,
                agreement=float(np.mean(batch.classes == reference.classes)),
                single_matches_batch=bool(np.array_equal(single.classes, batch.classes[:10])),
                max_probability_difference=float(np.nanmax(np.abs(batch.positive - reference.positive))),
            )
            found = [check]
            if isinstance(server, Mlplatform):  # its V2 batches too: "single = batch" compares with REST's
                v2 = server.predict_v2(spec, x[:CHECK_ROWS])
                found.append(
                    Check(
                        model=spec.key,
                        server=f"{server.label} (V2 infer)",
                        agreement=float(np.mean(v2.classes == reference.classes)),
                        single_matches_batch=bool(np.array_equal(v2.classes, batch.classes)),
                        max_probability_difference=float(np.nanmax(np.abs(v2.positive - reference.positive))),
                    )
                )
            checks += found
            for check in found:
                if check.agreement < MIN_AGREEMENT or not check.single_matches_batch:
                    raise RuntimeError(f"{check.server} disagrees with the {spec.key} model itself: {check}")
    return checks


class Wrk:
    """Runs wrk; each run of a bodies file continues its sequence numbers, so no input repeats across runs."""

    stride = 8  # STRIDE in benchmarks/wrk/common.lua

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}

    def run(self, target: LoadTarget, connections: int, seconds: int) -> dict[str, Any]:
        offset = self.offsets.get(target.bodies, 0)
        load = f"-t{min(2, connections)} -c{connections} -d{seconds}s --latency --timeout 10s".split()
        script = ["-s", str(target.script), target.url, "--", str(target.bodies), str(offset), *target.args]
        done = subprocess.run(["wrk", *load, *script], capture_output=True, text=True, timeout=seconds + 60)
        for line in done.stdout.splitlines():
            if line.startswith("WRK_JSON "):
                result = dict(json.loads(line.removeprefix("WRK_JSON ")))
                self.offsets[target.bodies] = offset + self.stride * (
                    int(result["requests"]) + connections + 16
                )
                return result
        raise RuntimeError(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


@dataclass(frozen=True)
class Scenario:
    spec: ModelSpec
    kind: str  # one of KINDS
    connections: int


def cpu_snapshot(server: Server, idle: Sequence[Server]) -> tuple[float, float, float]:
    client = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
    others = sum(other.process.cpu_seconds() for other in idle)
    return server.cpu_seconds(), client.ru_utime + client.ru_stime, others


def measure(
    wrk: Wrk, target: LoadTarget, server: Server, idle: Sequence[Server], scenario: Scenario, seconds: int
) -> Measurement:
    before, box_before = cpu_snapshot(server, idle), box_cpu_ticks()
    out = wrk.run(target, scenario.connections, seconds)
    after, box_after = cpu_snapshot(server, idle), box_cpu_ticks()
    steal, total = (end - start for start, end in zip(box_before, box_after, strict=True))
    count, elapsed = int(out["requests"]), out["duration_us"] / 1e6
    per_request = [(end - start) / max(count, 1) * 1e6 for start, end in zip(before, after, strict=True)]
    return Measurement(
        server=server.label,
        model=scenario.spec.key,
        kind=scenario.kind,
        connections=scenario.connections,
        requests=count,
        errors=sum(out["errors"].values()),
        seconds=elapsed,
        requests_per_s=count / elapsed,
        rows_per_s=count * (1 if scenario.kind == SINGLE else BATCH_ROWS) / elapsed,
        latency_ms={name: value / 1000 for name, value in out["latency_us"].items()},
        server_cpu_us_per_request=per_request[0],
        client_cpu_us_per_request=per_request[1],
        idle_server_cpu_s=after[2] - before[2],
        server_rss_mb=server.process.rss_mb(),
        steal_percent=100 * steal / max(total, 1),
    )


def run_load(
    servers: Sequence[Server], specs: Sequence[ModelSpec], profile: Profile, bodies: Bodies, wrk: Wrk
) -> list[Measurement]:
    plan = [Scenario(spec, kind, c) for spec in specs for kind in KINDS for c in profile.levels(kind)]
    runs = sum(server.measured[s.kind] == s.kind for s in plan for server in servers)
    results: list[Measurement] = []
    for step, scenario in enumerate(plan):
        spec, kind, c = scenario.spec, scenario.kind, scenario.connections
        for server in servers if step % 2 == 0 else servers[::-1]:  # neither server always goes first
            if server.measured[kind] != kind:
                continue  # its run of `server.measured[kind]` stands for this one
            target = server.target(spec, kind, bodies[(server.key, spec.key, kind)])
            wrk.run(target, c, profile.warmup_seconds)
            idle = [other for other in servers if other is not server]
            results.append(m := measure(wrk, target, server, idle, scenario, profile.seconds))
            progress = (
                f"  {len(results):>2}/{runs} {spec.key:<8} {kind:<8} c={c:<2}"
                f" {server.label:<14} {m.requests_per_s:>8,.0f} req/s  p99 {m.latency_ms['p99']:>8.2f} ms"
                f"  CPU {m.server_cpu_us_per_request:>8,.0f} µs/req  steal {m.steal_percent:4.1f} %"
            )
            console.print(progress + (f"  [red]{m.errors} errors[/]" if m.errors else ""), soft_wrap=True)
    return results


# ------------------------------------------------------------------------------------- experiments' cost

EXPERIMENT_SETUPS = ("no experiment", "A/B test 50/50", "shadow 100 %", "no experiment again")


def experiment_overhead(
    server: Mlplatform,
    spec: ModelSpec,
    profile: Profile,
    bodies: Bodies,
    wrk: Wrk,
    servers: Sequence[Server],
) -> list[tuple[str, Measurement, float]]:
    """Single rows at 8 connections on mlplatform with no experiment, an A/B test between two versions (the
    same model twice, so only the routing differs), 100 % shadow traffic, and none again (the drift of the
    box): (setup, measurement, shadow requests dropped)."""
    admin = {"X-API-Key": server.admin_key}
    server.register(spec, server.artifacts[spec.key], admin)  # version 2: the same model
    target = server.target(spec, SINGLE, bodies[(server.key, spec.key, SINGLE)])
    scenario = Scenario(spec, SINGLE, 8)
    idle = [other for other in servers if other is not server]
    url = f"{server.url}/api/ml/experiments"
    bodies_for = {
        "A/B test 50/50": {
            "type": "ab",
            "variants": [
                {"name": "a", "version": "1", "weight": 50},
                {"name": "b", "version": "2", "weight": 50},
            ],
        },
        "shadow 100 %": {
            "type": "shadow",
            "variants": [{"name": "live", "version": "1"}, {"name": "shadow", "version": "2", "weight": 100}],
        },
    }
    found = []
    running: str | None = None
    for setup in EXPERIMENT_SETUPS:
        if running is not None:
            expect(httpx.post(f"{url}/{running}/stop", headers=admin, timeout=30))
            running = None
        if setup in bodies_for:
            body = {"name": setup, "model": spec.name, **bodies_for[setup]}
            running = expect(httpx.post(url, json=body, headers=admin, timeout=30), 201)["id"]
        time.sleep(0.5)  # the routing table is refreshed through an event: well under this
        dropped = server.counters().get("ml_experiment_shadow_dropped", 0.0)
        wrk.run(target, 8, profile.warmup_seconds)
        m = measure(wrk, target, server, idle, scenario, profile.seconds)
        dropped = server.counters().get("ml_experiment_shadow_dropped", 0.0) - dropped
        found.append((setup, m, dropped))
        console.print(
            f"  {spec.key:<8} {setup:<20} {m.requests_per_s:>8,.0f} req/s  p99 {m.latency_ms['p99']:>6.2f} ms"
            f"  CPU {m.server_cpu_us_per_request:>6,.0f} µs/req"
        )
    if running is not None:
        expect(httpx.post(f"{url}/{running}/stop", headers=admin, timeout=30))
    return found


def overhead_report(found: Sequence[tuple[str, Measurement, float]]) -> Report:
    base = [m.server_cpu_us_per_request for setup, m, _ in found if setup.startswith("no experiment")]
    reference = float(np.mean(base)) if base else float("nan")
    rows = []
    for setup, m, dropped in found:
        extra = m.server_cpu_us_per_request / reference - 1
        target = ""
        if setup.startswith("A/B"):
            target = "≤ +5 %" + (" ✓" if extra <= 0.05 else " ✗")
        rows.append(
            [
                setup,
                f"{m.requests_per_s:,.0f}",
                f"{m.latency_ms['p99']:.2f}",
                f"{m.server_cpu_us_per_request:,.0f}",
                f"{100 * extra:+.1f} %",
                f"{dropped:,.0f}",
                target,
            ]
        )
    model = found[0][1].model if found else ""
    note = (
        "CPU against the mean of the two runs without an experiment. The shadow's CPU includes its own"
        " predictions (made after each answer, off the answer's path): about one more model call per request."
    )
    columns = ("setup", "req/s", "p99 ms", "CPU µs/req", "CPU vs none", "shadow dropped", "target")
    return Report(
        f"Experiments on the predict path — {model}, single row, 8 connections", columns, rows, note
    )


# ---------------------------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Report:
    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True)
class Metric:
    label: str
    key: str  # a Measurement field, or a key of its latency_ms
    digits: int

    def value(self, measurement: Measurement) -> float:
        found = measurement.latency_ms.get(self.key, None)
        return float(getattr(measurement, self.key) if found is None else found)


REQUESTS = Metric("req/s", "requests_per_s", 0)
ROWS = Metric("rows/s", "rows_per_s", 0)
P50, P95, P99 = (Metric(f"p{q} ms", f"p{q}", 2) for q in (50, 95, 99))
CPU = Metric("CPU µs/req", "server_cpu_us_per_request", 0)
ERRORS = Metric("errors", "errors", 0)
BATCH_METRICS = (ROWS, REQUESTS, P50, P95, P99, CPU)
METRICS = {SINGLE: (REQUESTS, P50, P95, P99, CPU), BATCH: BATCH_METRICS, V2_BATCH: BATCH_METRICS}
COLUMNS = ("MLServer", "mlplatform", "ratio", "target")
RATIO_NOTE = (
    "ratio = mlplatform / MLServer: above 1 is better for req/s and rows/s, below 1 for latency and CPU."
)


def goal(kind: str, metric: Metric, c: int) -> tuple[str, Callable[[float, float], bool]] | None:
    """The target for a cell, and its test on (mlplatform's value, mlplatform / MLServer)."""
    if kind == SINGLE and metric is REQUESTS and c == 8:
        return "≥ 3×", lambda _, ratio: ratio >= 3
    if kind == SINGLE and metric is P99 and c == 8:
        return "≤ 5 ms", lambda ours, _: ours <= 5
    if kind == SINGLE and metric is CPU:
        return "≤ 300 µs", lambda ours, _: ours <= 300
    if kind != SINGLE and metric is ROWS:
        return "≥ 3×", lambda _, ratio: ratio >= 3
    return None


def cells(
    metric: Metric, kind: str, c: int, theirs: Measurement | None, ours: Measurement | None
) -> list[str]:
    a, b = (None if m is None else metric.value(m) for m in (theirs, ours))
    ratio = b / a if a and b is not None else None
    target = goal(kind, metric, c)
    text = "" if target is None else target[0]
    if target is not None and b is not None and ratio is not None:
        text += " ✓" if target[1](b, ratio) else " ✗"
    shown = ["—" if v is None else f"{v:,.{metric.digits}f}" for v in (a, b)]
    return [metric.label, *shown, "—" if ratio is None else f"{ratio:.2f}×", text]


def pair(results: Sequence[Measurement], model: str, kind: str, c: int) -> tuple[Measurement | None, ...]:
    """(MLServer's, mlplatform's) measurement for one scenario; MLServer's V2 batch is its batch."""

    def find(server: type[Server]) -> Measurement | None:
        wanted = (server.label, model, server.measured[kind], c)
        return next((m for m in results if (m.server, m.model, m.kind, m.connections) == wanted), None)

    return find(MLServer), find(Mlplatform)


def scenario_report(
    results: Sequence[Measurement], spec: ModelSpec, kind: str, levels: Sequence[int]
) -> Report:
    rows = []
    for c in levels:
        theirs, ours = pair(results, spec.key, kind, c)
        with_errors = any(m is not None and m.errors for m in (theirs, ours))
        for metric in (*METRICS[kind], ERRORS) if with_errors else METRICS[kind]:
            rows.append([str(c), *cells(metric, kind, c, theirs, ours)])
    what = {
        SINGLE: "single row",
        BATCH: f"batch of {BATCH_ROWS} rows, each server's batch API",
        V2_BATCH: f"batch of {BATCH_ROWS} rows, V2 infer on both (the same body)",
    }[kind]
    return Report(f"{spec.title} — {what}", ("conns", "metric", *COLUMNS), rows, RATIO_NOTE)


def summary_report(results: Sequence[Measurement], specs: Sequence[ModelSpec]) -> Report:
    headline = ((SINGLE, REQUESTS), (SINGLE, P99), (SINGLE, CPU), (BATCH, ROWS), (V2_BATCH, ROWS))
    rows = [
        [spec.key, kind, *cells(metric, kind, 8, *pair(results, spec.key, kind, 8))]
        for spec in specs
        for kind, metric in headline
    ]
    rss = {
        label: max((m.server_rss_mb for m in results if m.server == label), default=None)
        for label in (MLServer.label, Mlplatform.label)
    }
    rows.append(
        ["all", "", "peak RSS MB", *("—" if v is None else f"{v:,.0f}" for v in rss.values()), "", ""]
    )
    return Report("Summary at 8 connections", ("model", "kind", "metric", *COLUMNS), rows, RATIO_NOTE)


def agreement_report(checks: Sequence[Check]) -> Report:
    rows = [
        [c.model, c.server, f"{c.agreement:.1%}", "yes" if c.single_matches_batch else "NO"]
        + [f"{c.max_probability_difference:.2g}"]
        for c in checks
    ]
    columns = ("model", "server", f"model's class ({CHECK_ROWS} rows)", "single = batch", "max |Δp(1)|")
    return Report("Correctness, checked before measuring", columns, rows)


def environment_report(env: dict[str, Any]) -> Report:
    rows = [[key, value if isinstance(value, str) else json.dumps(value)] for key, value in env.items()]
    return Report("Environment", ("what", "value"), rows)


def to_rich(report: Report) -> Table:
    table = Table(
        title=report.title, title_justify="left", caption=report.note or None, caption_justify="left"
    )
    numeric = len(COLUMNS) if report.columns[-len(COLUMNS) :] == COLUMNS else 0
    for index, column in enumerate(report.columns):
        table.add_column(column, justify="right" if index >= len(report.columns) - numeric else "left")
    for row in report.rows:
        table.add_row(*map(Text, row))  # cells are data, not rich markup ("[epoll]")
    return table


def to_markdown(report: Report) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [
        f"### {report.title}",
        "",
        line(report.columns),
        "|" + "|".join("---" for _ in report.columns) + "|",
    ]
    lines += [line(row) for row in report.rows]
    return "\n".join([*lines, "", report.note] if report.note else lines) + "\n"


# -------------------------------------------------------------------------------------------- environment

LIBRARIES = (
    "numpy",
    "scikit-learn",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
    "fastapi",
    "uvicorn",
    "uvloop",
    "pydantic",
)
VERSIONS = """
import importlib.metadata as m, json, platform, sys
found = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try: found[name] = m.version(name)
    except m.PackageNotFoundError: pass
print(json.dumps(found))
"""


def versions(python: Path, packages: Sequence[str]) -> dict[str, str]:
    done = subprocess.run(
        [str(python), "-c", VERSIONS, *packages], capture_output=True, text=True, timeout=60
    )
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {"error": done.stderr[-300:]}


def load_average() -> list[float]:
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def environment(mlserver_venv: Path, servers: Sequence[Server], profile: Profile) -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
        platform.processor(),
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout.split(
        " Copyright"
    )[0]
    env: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "memory": f"{memory_kib / 1024**2:.1f} GiB",
        "kernel": platform.release(),
        "load average at start": load_average(),
        "load generator": f"{wrk.strip()}, -t2 (-t1 at 1 connection), keep-alive, same box",
        "profile": f"{profile.name}: {profile.seconds} s per run after {profile.warmup_seconds} s of warm-up",
        "mlplatform set-up": next(
            (server.set_up() for server in servers if isinstance(server, Mlplatform)), "not run"
        ),
        "mlplatform venv": versions(
            ROOT / ".venv" / "bin" / "python", ["mlplatform", "onnxruntime", "skops", *LIBRARIES]
        ),
    }
    if any(server.key == "mlserver" for server in servers):
        plugins = [f"mlserver{suffix}" for suffix in ("", "-sklearn", "-xgboost", "-lightgbm")]
        env["mlserver venv"] = versions(mlserver_venv / "bin" / "python", [*plugins, *LIBRARIES])
    return env


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="3 s runs instead of 12 s (about 4 minutes in all)"
    )
    parser.add_argument("--servers", choices=("both", "mlserver", "mlplatform"), default="both")
    parser.add_argument("--models", default=",".join(m.key for m in MODELS), help="comma-separated subset")
    parser.add_argument("--seconds", type=int, help="measured seconds per run (overrides the profile)")
    parser.add_argument("--mlserver-venv", type=Path, default=ROOT / ".venv-mlserver")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (models, bodies, logs)"
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="mlplatform's cache on this Redis, as in production (its CPU is counted with mlplatform's)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="mlplatform worker processes (more than 1 needs --redis)"
    )
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.redis:
        parser.error("--workers above 1 needs --redis: several workers share their state through it")
    return args


def choose(args: argparse.Namespace) -> tuple[Profile, list[ModelSpec], list[Server]]:
    profile = PROFILES["quick" if args.quick else "full"]
    if args.seconds:
        profile = Profile(profile.name, args.seconds, profile.warmup_seconds)
    specs = [spec for spec in MODELS if spec.key in args.models.split(",")]
    servers: list[Server] = [MLServer(args.mlserver_venv)] if args.servers in ("both", "mlserver") else []
    servers += [Mlplatform(args.redis, args.workers)] if args.servers in ("both", "mlplatform") else []
    if not specs:
        raise SystemExit(f"--models: choose among {', '.join(m.key for m in MODELS)}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: `make bench` installs it (apt-get install wrk)")
    return profile, specs, servers


def publish(
    env: dict[str, Any],
    checks: list[Check],
    results: list[Measurement],
    profile: Profile,
    specs: Sequence[ModelSpec],
    *extra: Report,
) -> None:
    reports = [environment_report(env), agreement_report(checks)]
    for spec in specs:
        reports += [scenario_report(results, spec, kind, profile.levels(kind)) for kind in KINDS]
    reports.append(summary_report(results, specs))
    reports += extra
    for report in reports:
        console.print(to_rich(report))
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/serving.py", *sys.argv[1:]])
    title = f"# Serving: mlplatform vs MLServer 1.7.1\n\n`{command}` (how to read it: benchmarks/README.md)\n"
    (RESULTS / "latest.md").write_text("\n".join([title, *map(to_markdown, reports)]))
    data = {"environment": env, "checks": [asdict(c) for c in checks], "runs": [asdict(r) for r in results]}
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"written {RESULTS / 'latest.md'} and {RESULTS / 'latest.json'}")


def bench(args: argparse.Namespace, work: Path) -> None:
    profile, specs, servers = choose(args)
    env = environment(args.mlserver_venv, servers, profile)
    if load_average()[0] > BUSY_LOAD:
        console.print(
            f"[yellow]the box is busy (load {env['load average at start']}): numbers will be noisy[/]"
        )
    console.print(f"training {len(specs)} models in {work}")
    x, y = make_dataset()
    artifacts, references = prepare_models(specs, x, y, work)
    bodies = write_bodies(servers, specs, x, work)
    with ExitStack() as stack:
        for server in servers:
            server.start(work, artifacts)
            stack.callback(server.process.stop)
            if isinstance(server, Mlplatform):
                stack.callback(server.forget_keys)
        for server in servers:
            server.wait()
        console.print("servers ready: checking their answers")
        checks = check_agreement(servers, specs, x, references)
        runs = len(specs) * sum(
            len(profile.levels(kind)) for server in servers for kind in KINDS if server.measured[kind] == kind
        )
        console.print(
            f"measuring: {runs} runs, about {runs * (profile.seconds + profile.warmup_seconds + 1)} s"
        )
        wrk = Wrk()
        results = run_load(servers, specs, profile, bodies, wrk)
        ours = next(server for server in servers if isinstance(server, Mlplatform))
        overhead = experiment_overhead(ours, specs[0], profile, bodies, wrk, servers)
        env["mlplatform counters at the end"] = ours.counters()
    env["load average at end"] = load_average()
    steal = [m.steal_percent for m in results]
    env["CPU steal during the runs"] = f"{min(steal):.1f}–{max(steal):.1f} % (mean {np.mean(steal):.1f} %)"
    publish(env, checks, results, profile, specs, overhead_report(overhead))


def in_work_folder(prefix: str, keep: bool, run: Callable[[Path], None]) -> None:
    """`run` in a fresh temporary folder: on failure, the end of each server log in it is printed; the folder
    is removed afterwards unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        run(work)
    except BaseException:
        for log in sorted(work.glob("*.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            console.print(f"--- last lines of {log} ---\n{tail}", markup=False, highlight=False)
        raise
    finally:
        if keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    in_work_folder("mlplatform-bench-", args.keep, lambda work: bench(args, work))


if __name__ == "__main__":
    main()
