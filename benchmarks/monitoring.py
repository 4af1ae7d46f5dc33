"""Monitoring benchmark: feedback ingestion, one drift check, and predict with monitoring on and off.

    python benchmarks/monitoring.py [--quick] [--postgres DSN] [--keep]

Everything runs on this box in one run, through real `mlplatform serve` processes started from this
checkout's `src/`, and each number sits next to its reference: the same feedback rows written with a plain
psycopg COPY, and the same predict load with `ml.monitoring.enabled` false. Prints the tables and writes
them to `benchmarks/results/monitoring.md` (and every number to `monitoring.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import orjson
import psycopg
import skops.io
from serving import (
    BATCH_ROWS,
    RESULTS,
    ROOT,
    SINGLE,
    Mlplatform,
    ModelSpec,
    Report,
    Rows,
    Scenario,
    ServerProcess,
    Wrk,
    console,
    expect,
    free_port,
    in_work_folder,
    load_average,
    make_dataset,
    measure,
    to_markdown,
    to_rich,
    write_bodies,
)
from sklearn.linear_model import LogisticRegression

FEEDBACK_REQUEST = 10_000  # labels per feedback request: the most one request may carry
SPEC = ModelSpec("sklearn", "LogisticRegression", "model.skops", ())
DRIFT_ROWS, DRIFT_FEATURES = 100_000, 30
CONNECTIONS = 8


@dataclass(frozen=True)
class Profile:
    name: str
    labels: int  # predictions logged, then labelled
    rounds: int  # predict runs per server, alternating which goes first
    seconds: int
    warmup_seconds: int
    drift_repeats: int


PROFILES = {
    "full": Profile("full", 200_000, 5, 10, 2, 5),
    "quick": Profile("quick", 50_000, 3, 3, 1, 3),
}


class Server(Mlplatform):
    """mlplatform on a database of this run's own (SQLite file, or a fresh PostgreSQL schema), migrated
    first, from this checkout's sources."""

    def __init__(self, key: str, label: str, database_url: str, *, monitoring: bool = True) -> None:
        super().__init__()
        self.key, self.label = key, label
        self.database_url, self.monitoring = database_url, monitoring

    def set_up(self) -> str:
        backend = "PostgreSQL" if self.database_url.startswith("postgresql") else "SQLite"
        return f"{backend}, in-process cache, ml.monitoring.enabled={str(self.monitoring).lower()}"

    def environ(self, folder: Path) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "MLPLATFORM_DATABASE__URL": self.database_url,
            "MLPLATFORM_STORAGE__URL": f"file://{folder}/artifacts",
            "MLPLATFORM_LOGGING__LEVEL__ROOT": "WARNING",
            "MLPLATFORM_CONFIG_DIR": str(ROOT / "config"),
            "MLPLATFORM_ML__MONITORING__ENABLED": str(self.monitoring).lower(),
        }

    def start(self, work: Path, artifacts: dict[str, Path]) -> None:
        folder = work / self.key
        folder.mkdir()
        self.artifacts, port = artifacts, free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = self.environ(folder)
        script = str(Path(sys.executable).parent / "mlplatform")
        subprocess.run([script, "db", "upgrade"], cwd=folder, env=env, check=True, capture_output=True)
        command = [script, "serve", "--port", str(port)]
        self.process = ServerProcess(command, cwd=folder, env=env, log=work / f"{self.key}.log")

    def log_predictions(self, x: Rows, count: int) -> list[str]:
        """Predict `count` rows in batch requests; return their ids once the log writer has written them."""
        written = self.counters()["ml_prediction_log_written"]
        ids: list[str] = []
        with httpx.Client(headers={"X-API-Key": self.predictor_key}, timeout=120) as client:
            for start in range(0, count, BATCH_ROWS):
                rows = x[start % len(x) :][: min(BATCH_ROWS, count - start)]
                body = {"model": SPEC.name, "instances": rows.tolist()}
                answer = expect(client.post(f"{self.url}/api/ml/predict/batch", json=body))
                ids += [p["prediction_id"] for p in answer["predictions"]]
        deadline = time.monotonic() + 120
        while self.counters()["ml_prediction_log_written"] < written + count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: the log writer did not write {count} predictions")
            time.sleep(0.2)
        return ids

    def send_feedback(self, bodies: Sequence[bytes]) -> list[float]:
        """Seconds per request, each a whole HTTP round trip."""
        seconds = []
        headers = {"X-API-Key": self.predictor_key, "Content-Type": "application/json"}
        with httpx.Client(headers=headers, timeout=120) as client:
            for body in bodies:
                started = time.perf_counter()
                response = client.post(f"{self.url}/api/ml/feedback", content=body)
                seconds.append(time.perf_counter() - started)
                expect(response)
        return seconds


# ---------------------------------------------------------------------------------------------- feedback


def feedback_bodies(ids: Sequence[str], classes: Sequence[int]) -> list[bytes]:
    items = [{"prediction_id": id_, "actual": int(label)} for id_, label in zip(ids, classes, strict=True)]
    return [orjson.dumps(items[i : i + FEEDBACK_REQUEST]) for i in range(0, len(items), FEEDBACK_REQUEST)]


@dataclass(frozen=True)
class Ingestion:
    what: str
    labels_per_request: int
    seconds: list[float]  # per request

    def rate(self, seconds: float) -> float:
        return self.labels_per_request / seconds


def ingest(server: Server, x: Rows, labels: int) -> list[Ingestion]:
    """First labels for `labels` logged predictions, then the same labels again (every one a duplicate)."""
    ids = server.log_predictions(x, labels)
    bodies = feedback_bodies(ids, np.arange(labels) % 2)
    first = server.send_feedback(bodies)
    again = server.send_feedback(bodies[:2])
    return [
        Ingestion(f"{server.label}: new labels", FEEDBACK_REQUEST, first),
        Ingestion(f"{server.label}: every label replaces one", FEEDBACK_REQUEST, again),
    ]


def bare_copy(dsn: str, schema: str, rows: int) -> Ingestion:
    """The rows the server stored, written again with a plain psycopg COPY (`write_row` per row, one
    transaction per 10,000) into an empty copy of the table (same indexes): the library's own cost."""
    bare = f"bare_{uuid.uuid4().hex[:8]}"
    seconds = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = conn.execute(
            f'SELECT * FROM "{schema}".feedback WHERE superseded_at IS NULL ORDER BY id LIMIT %s', (rows,)
        ).fetchall()
        conn.execute(f'CREATE SCHEMA "{bare}"')
        try:
            conn.execute(f'CREATE TABLE "{bare}".feedback (LIKE "{schema}".feedback INCLUDING ALL)')
            for start in range(0, len(stored), FEEDBACK_REQUEST):
                chunk = [
                    (*row[:8], orjson.dumps(row[8]).decode(), *row[9:]) for row in stored[start:][:10_000]
                ]
                started = time.perf_counter()
                with conn.transaction(), conn.cursor().copy(f'COPY "{bare}".feedback FROM STDIN') as copy:
                    for row in chunk:
                        copy.write_row(row)
                seconds.append(time.perf_counter() - started)
        finally:
            conn.execute(f'DROP SCHEMA "{bare}" CASCADE')
    return Ingestion("plain psycopg COPY of the same rows, PostgreSQL", FEEDBACK_REQUEST, seconds)


def ingestion_report(results: Sequence[Ingestion]) -> Report:
    rows = []
    for result in results:
        median = statistics.median(result.seconds)
        rows.append(
            [
                result.what,
                str(len(result.seconds)),
                f"{median * 1000:,.0f}",
                f"{result.rate(median):,.0f}",
                f"{result.rate(max(result.seconds)):,.0f}–{result.rate(min(result.seconds)):,.0f}",
            ]
        )
    columns = ("what", "requests", "median ms/request", "labels/s (median)", "labels/s (range)")
    note = (
        f"{FEEDBACK_REQUEST:,} labels per request, each timed as one HTTP round trip from a client on the"
        " same box (the COPY row: one transaction from psycopg). Goal on PostgreSQL: ≥ 50,000 labels/s."
    )
    return Report("Feedback ingestion, 10,000-label requests", columns, rows, note)


# ------------------------------------------------------------------------------------------------- drift

DRIFT_CHILD = """
import json, os, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from drift_calibration import timing
rows, features, repeats = (int(v) for v in sys.argv[3:6])
runs = [timing(rows, features, 1) for _ in range(repeats)]
build, times = runs[0][0], [run[1] for run in runs]
print(json.dumps({"build": build, "compare": times, "cpus": sorted(os.sched_getaffinity(0))}))
"""


def drift_check(repeats: int) -> dict[str, Any]:
    """One compare of 100,000 current rows x 30 features, in a child process pinned to one CPU."""
    arguments = [str(ROOT / "benchmarks"), str(ROOT / "src"), str(DRIFT_ROWS), str(DRIFT_FEATURES)]
    done = subprocess.run(
        [sys.executable, "-c", DRIFT_CHILD, *arguments, str(repeats)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def drift_report(found: dict[str, Any]) -> Report:
    compares = found["compare"]
    rows = [
        [
            "compare(profile, current columns)",
            f"{statistics.median(compares):.2f}",
            f"{min(compares):.2f}–{max(compares):.2f}",
            "≤ 2 s " + ("✓" if statistics.median(compares) <= 2 else "✗"),
        ],
        ["ReferenceProfile.from_columns (reference, once per version)", f"{found['build']:.2f}", "", ""],
    ]
    note = (
        f"{DRIFT_ROWS:,} rows x {DRIFT_FEATURES} features (18 numeric, 12 categorical, as in"
        f" drift_calibration.py), a child process pinned to CPU {found['cpus'][0]}; {len(compares)} runs."
        " The current columns are given as arrays: sampling them from the prediction log"
        " (`MonitoringService.check_drift`) is not timed here."
    )
    return Report("One drift check, one core", ("step", "median s", "range s", "goal"), rows, note)


# ----------------------------------------------------------------------------------------------- predict


def predict_on_off(servers: Sequence[Server], bodies: Path, profile: Profile) -> list[Any]:
    wrk, results = Wrk(), []
    scenario = Scenario(SPEC, SINGLE, CONNECTIONS)
    for round_ in range(profile.rounds):
        for server in servers if round_ % 2 == 0 else servers[::-1]:
            target = server.target(SPEC, SINGLE, bodies)
            wrk.run(target, CONNECTIONS, profile.warmup_seconds)
            idle = [other for other in servers if other is not server]
            result = measure(wrk, target, server, idle, scenario, profile.seconds)
            results.append(result)
            console.print(
                f"  round {round_ + 1}/{profile.rounds} {server.label:<16}"
                f" {result.requests_per_s:>7,.0f} req/s"
                f"  CPU {result.server_cpu_us_per_request:>5,.0f} µs/req  steal {result.steal_percent:4.1f} %"
            )
    return results


def predict_report(results: Sequence[Any], servers: Sequence[Server], profile: Profile) -> Report:
    def median(label: str, key: str) -> float:
        return statistics.median(
            m.latency_ms.get(key, getattr(m, key, 0)) for m in results if m.server == label
        )

    on, off = servers
    rows = []
    for name, key in (("req/s", "requests_per_s"), ("CPU µs/req", "server_cpu_us_per_request")):
        a, b = median(on.label, key), median(off.label, key)
        spread = [getattr(m, key) for m in results]
        rows.append(
            [name, f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.2f}", f"{min(spread):,.0f}–{max(spread):,.0f}"]
        )
    rows.append(["p99 ms", *(f"{median(s.label, 'p99'):.2f}" for s in servers), "", ""])
    note = (
        f"Single-row predict, wrk at {CONNECTIONS} connections, SQLite; median of {profile.rounds} runs of"
        f" {profile.seconds} s per server, alternating which goes first, after {profile.warmup_seconds} s of"
        " warm-up each. `ml.monitoring.enabled` switches the scheduled checks, which run in the background"
        " every check-interval; nothing of monitoring runs on the predict path, so the ratio shows the box's"
        " noise."
    )
    columns = ("metric", "monitoring on", "monitoring off", "on / off", "range, all runs")
    return Report("Predict with monitoring on and off, same run", columns, rows, note)


# ------------------------------------------------------------------------------------------------- main


def environment(profile: Profile, dsn: str) -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    with psycopg.connect(dsn) as conn:
        postgres = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "python": sys.version.split()[0],
        "postgresql": postgres,
        "profile": f"{profile.name}: {profile.labels:,} labels, {profile.rounds} predict runs of"
        f" {profile.seconds} s per server",
        "load average at start": load_average(),
    }


def postgres_url(dsn: str, schema: str) -> str:
    base = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options={quote(f'-csearch_path={schema}')}"


def bench(args: argparse.Namespace, work: Path) -> None:
    profile = PROFILES["quick" if args.quick else "full"]
    parts = set(args.parts.split(","))
    env = environment(profile, args.postgres)
    console.print(f"profile {profile.name}; work folder {work}")
    x, y = make_dataset()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    artifact = work / "model.skops"
    skops.io.dump(model, artifact)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    postgres = Server("pg", "PostgreSQL", postgres_url(args.postgres, schema))
    sqlite = Server("sqlite", "SQLite", f"sqlite+aiosqlite:///{work}/sqlite.db")
    on = Server("on", "monitoring on", f"sqlite+aiosqlite:///{work}/on.db", monitoring=True)
    off = Server("off", "monitoring off", f"sqlite+aiosqlite:///{work}/off.db", monitoring=False)
    servers = ([postgres, sqlite] if "feedback" in parts else []) + ([on, off] if "predict" in parts else [])
    reports: list[Report] = []
    data: dict[str, Any] = {"environment": env}
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with ExitStack() as stack:
            for server in servers:
                server.start(work, {SPEC.key: artifact})
                stack.callback(server.process.stop)
            for server in servers:
                server.wait()
            if "predict" in parts:
                console.print("predict, monitoring on and off")
                bodies = write_bodies([on], [SPEC], x, work)[(on.key, SPEC.key, SINGLE)]
                predicted = predict_on_off([on, off], bodies, profile)
                steal = [m.steal_percent for m in predicted]
                env["CPU steal during the predict runs"] = f"{min(steal):.1f}–{max(steal):.1f} %"
                reports.append(predict_report(predicted, [on, off], profile))
                data["predict"] = [vars(m) for m in predicted]
            if "feedback" in parts:
                console.print(f"feedback: {profile.labels:,} predictions logged, then labelled")
                ingestion: list[Ingestion] = []
                for server in (postgres, sqlite):
                    ingestion += (found := ingest(server, x, profile.labels))
                    rate = found[0].rate(statistics.median(found[0].seconds))
                    console.print(f"  {found[0].what}: {rate:,.0f}/s")
                ingestion.insert(1, bare_copy(args.postgres, schema, profile.labels))
                reports.insert(0, ingestion_report(ingestion))
                data["ingestion"] = [vars(i) for i in ingestion]
        if "drift" in parts:
            console.print("drift: one check on one core")
            data["drift"] = drift = drift_check(profile.drift_repeats)
            reports.insert(1 if "feedback" in parts else 0, drift_report(drift))
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    env["load average at end"] = load_average()
    rows = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in env.items()]
    reports.insert(0, Report("Environment", ("what", "value"), rows))
    for report in reports:
        console.print(to_rich(report))
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/monitoring.py", *sys.argv[1:]])
    title = f"# Monitoring benchmark\n\n`{command}`\n"
    (RESULTS / "monitoring.md").write_text("\n".join([title, *map(to_markdown, reports)]))
    (RESULTS / "monitoring.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    console.print(f"written {RESULTS / 'monitoring.md'} and {RESULTS / 'monitoring.json'}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50,000 labels, 3 s predict runs (~3 minutes)")
    parser.add_argument(
        "--postgres", default=os.environ.get("MLP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument(
        "--parts", default="feedback,drift,predict", help="comma-separated subset of feedback,drift,predict"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: `make bench-wrk` installs it")
    in_work_folder("mlplatform-monitoring-bench-", args.keep, lambda work: bench(args, work))


if __name__ == "__main__":
    main()
