"""Training benchmark: a job against the same library called directly, time to the first progress update,
and a dataset past one Dask worker's memory limit.

    python benchmarks/training.py [--quick] [--parts direct,progress,memory] [--keep]

Everything runs on this box, through real `mlplatform serve` processes started from this checkout's `src/`:
- direct: XGBoost and LightGBM on 1,000,000 × 30, a random forest on 200,000 × 30 (a tenth of that with
  --quick), each trained by a job (from its creation at the POST to its end, as the server records them:
  read from storage, split, fit with progress, evaluate, save, register) and by the library itself in this
  process on the same rows, the same split and the same parameters (one thread each, as a job's worker has). Goal: the job takes ≤ 10 % more wall time.
- progress: POST of a long XGBoost job to the first progress update the API shows, on the embedded cluster
  (warm: its first job started it). Goal ≤ 1 s.
- memory: a Parquet dataset whose float64 columns are larger than one worker's `memory_limit`, trained with
  `distributed: true` on a LocalCluster of one such worker (it must fail, saying so) then of two
  (`xgboost.dask` across both).
Prints the tables and writes them to `benchmarks/results/training.md` (every number to `training.json`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from serving import (
    RESULTS,
    ROOT,
    Report,
    ServerProcess,
    console,
    expect,
    free_port,
    in_work_folder,
    load_average,
    to_markdown,
    to_rich,
)

FEATURES = 30
TERMINAL = {"succeeded", "failed", "cancelled"}
PHASES = ("read", "fit", "evaluate", "save", "register")


@dataclass(frozen=True)
class Profile:
    name: str
    boosting_rows: int
    forest_rows: int
    rounds: int
    trees: int
    repeats: int  # job and direct runs per algorithm, alternating; the median is reported
    progress_runs: int
    memory_limit: float  # bytes per worker in the memory case
    memory_rows: int  # rows × 31 float64 columns past one worker's limit, within two workers'


PROFILES = {
    "full": Profile("full", 1_000_000, 200_000, 100, 50, 3, 5, 3.0e9, 12_500_000),
    # Below about 2 GB a worker's own ~0.3 GB (Python, Dask, the libraries) leaves two too little room.
    "quick": Profile("quick", 100_000, 20_000, 50, 20, 1, 3, 2.5e9, 10_500_000),
}


class Server:
    """`mlplatform serve` on SQLite and a local folder, on the embedded cluster or an existing one."""

    def __init__(self, work: Path, key: str, scheduler: str = "local") -> None:
        self.admin_key = secrets.token_hex(20)
        folder = work / key
        folder.mkdir()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "MLPLATFORM_SECURITY__API_KEYS__BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "MLPLATFORM_DATABASE__URL": f"sqlite+aiosqlite:///{folder}/bench.db",
            "MLPLATFORM_STORAGE__URL": f"file://{folder}/artifacts",
            "MLPLATFORM_LOGGING__LEVEL__ROOT": "WARNING",
            "MLPLATFORM_CONFIG_DIR": str(ROOT / "config"),
            "MLPLATFORM_JOBS__SCHEDULER": scheduler,
            # The memory case uploads a dataset past the default limits (10 M rows, 2 GiB).
            "MLPLATFORM_SECURITY__LIMITS__MAX_UPLOAD_ROWS": "50000000",
            "MLPLATFORM_SECURITY__LIMITS__MAX_UPLOAD_SIZE": "8GiB",
        }
        script = str(Path(sys.executable).parent / "mlplatform")
        self.process = ServerProcess(
            [script, "serve", "--port", str(port)], cwd=folder, env=env, log=work / f"{key}.log"
        )
        self.http = httpx.Client(base_url=self.url, headers={"X-API-Key": self.admin_key}, timeout=600)

    def wait(self) -> None:
        self.process.wait_ready(f"{self.url}/actuator/health/readiness", timeout=180)

    def stop(self) -> None:
        self.http.close()
        self.process.stop()

    def upload(self, path: Path, name: str) -> str:
        with path.open("rb") as file:
            response = self.http.post(
                "/api/ml/datasets", files={"file": (path.name, file)}, data={"name": name}
            )
        return str(expect(response, 201)["id"])

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(expect(self.http.post("/api/ml/training-jobs", json=body), 202))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(expect(self.http.get(f"/api/ml/training-jobs/{job_id}")))

    def follow(
        self, job_id: str, until: Callable[[dict[str, Any]], bool], every: float = 0.05
    ) -> dict[str, Any]:
        while not until(job := self.job(job_id)):
            time.sleep(every)
        return job


# ------------------------------------------------------------------------------------------------- data


def make_table(rows: int, seed: int = 0, dtype: Any = np.float64) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(dtype)
    signal = x[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.3]) + 0.5 * x[:, 5] * x[:, 6]
    label = (signal + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)
    columns = {f"f{i}": x[:, i] for i in range(FEATURES)}
    return pa.table({**columns, "label": label})


def write_parquet(table: pa.Table, path: Path, row_group: int = 250_000) -> Path:
    pq.write_table(table, path, row_group_size=row_group)
    return path


def write_big_parquet(rows: int, path: Path, chunk: int = 500_000) -> Path:
    """`rows` rows written a chunk at a time, as float32 (half the file; a job reads them as float64)."""
    writer = None
    try:
        for start in range(0, rows, chunk):
            table = make_table(min(chunk, rows - start), seed=start, dtype=np.float32)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=100_000)  # each worker reads a share of the groups
    finally:
        if writer is not None:
            writer.close()
    return path


# ---------------------------------------------------------------------------------------- job vs direct


ALGORITHMS = {  # algorithm: (rows attribute of the profile, hyperparameters given the profile)
    "xgboost": ("boosting_rows", lambda p: {"n_estimators": p.rounds, "max_depth": 6}),
    "lightgbm": ("boosting_rows", lambda p: {"n_estimators": p.rounds, "num_leaves": 63}),
    "random_forest": ("forest_rows", lambda p: {"n_estimators": p.trees, "max_depth": 16}),
}


def direct_fit(algorithm: str, params: dict[str, Any], table: pa.Table) -> float:
    """The library itself on the job's split (the rows sklearn's train_test_split holds out, stratified,
    seed 0, in the dataset's order), one thread, random_state 0 as the job's seed gives it: the same model."""
    import lightgbm
    import xgboost
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X = np.column_stack([table[f"f{i}"].to_numpy() for i in range(FEATURES)]).astype(np.float64)
    y = table["label"].to_numpy()
    train, val = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    train, val = np.sort(train), np.sort(val)  # the job's rows, in the dataset's order as the job keeps them
    X_train, X_val, y_train, y_val = X[train], X[val], y[train], y[val]
    started = time.perf_counter()
    if algorithm == "xgboost":
        xgboost.XGBClassifier(**params, n_jobs=1, random_state=0).fit(
            X_train, y_train, eval_set=[(X_val, y_val)], verbose=False
        )
    elif algorithm == "lightgbm":
        model = lightgbm.LGBMClassifier(**params, n_jobs=1, verbose=-1, random_state=0)
        if "eval_X" in inspect.signature(model.fit).parameters:  # lightgbm >= 4.7 deprecates eval_set
            model.fit(X_train, y_train, eval_X=(X_val,), eval_y=(y_val,))
        else:
            model.fit(X_train, y_train, eval_set=[(X_val, y_val)])
    else:
        RandomForestClassifier(**params, n_jobs=1, random_state=0).fit(X_train, y_train)
    return time.perf_counter() - started


def job_wall(
    server: Server, dataset: str, algorithm: str, params: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    body = {
        "model": f"bench-{algorithm.replace('_', '-')}",
        "dataset": dataset,
        "target": "label",
        "algorithm": algorithm,
        "hyperparameters": params,
        "distributed": False,
    }
    job = server.submit(body)
    # Polled twice a second: 20 polls a second (each a request the server answers from its database) took CPU
    # from the job on this 2-core box. The wall time is the server's own: created (at the POST) to finished.
    done = server.follow(job["id"], lambda j: j["state"] in TERMINAL, every=0.5)
    if done["state"] != "succeeded":
        raise RuntimeError(f"{algorithm} job {done['state']}: {done.get('error')}")
    created, finished = (datetime.fromisoformat(done[at]) for at in ("created_at", "finished_at"))
    return (finished - created).total_seconds(), done


def job_vs_direct(server: Server, work: Path, profile: Profile) -> tuple[Report, list[dict[str, Any]]]:
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    tables: dict[int, tuple[pa.Table, str]] = {}
    for algorithm, (size, hyper) in ALGORITHMS.items():
        count, params = getattr(profile, size), hyper(profile)
        if count not in tables:
            table = make_table(count)
            tables[count] = (table, server.upload(write_parquet(table, work / f"d{count}.parquet"), "bench"))
        table, dataset = tables[count]
        console.print(f"  {algorithm}: {count:,} × {FEATURES}, {params}")
        if not data:  # the server's first job starts the embedded cluster: shown apart, not in the medians
            cold_seconds, cold = job_wall(server, dataset, algorithm, params)
            cold_phases = cold.get("timings") or {}
            rows.append(
                [
                    f"{algorithm} (first job: starts the cluster)",
                    f"{count:,} × {FEATURES}",
                    "",
                    f"{cold_seconds:.1f}",
                    "",
                    "",
                    "",
                    " · ".join(f"{phase} {cold_phases.get(phase, 0.0):.1f}" for phase in PHASES),
                ]
            )
            data.append(
                {"algorithm": algorithm, "first_job": True, "seconds": cold_seconds, "phases": cold_phases}
            )
        job_seconds, direct_seconds, timings = [], [], []
        for _ in range(profile.repeats):
            seconds, job = job_wall(server, dataset, algorithm, params)
            job_seconds.append(seconds)
            timings.append(job.get("timings") or {})
            direct_seconds.append(direct_fit(algorithm, params, table))
        job_s, direct_s = statistics.median(job_seconds), statistics.median(direct_seconds)
        phases = {phase: statistics.median(t.get(phase, 0.0) for t in timings) for phase in PHASES}
        phases["other"] = job_s - sum(phases.values())  # queueing, Dask, following, the API
        overhead = (job_s / direct_s - 1) * 100
        rows.append(
            [
                algorithm,
                f"{count:,} × {FEATURES}",
                f"{direct_s:.1f}",
                f"{job_s:.1f}",
                f"{overhead:+.1f} %",
                "≤ +10 %",
                "yes" if overhead <= 10 else "no",
                " · ".join(f"{phase} {seconds:.1f}" for phase, seconds in phases.items()),
            ]
        )
        data.append(
            {
                "algorithm": algorithm,
                "rows": count,
                "params": params,
                "job_seconds": job_seconds,
                "direct_seconds": direct_seconds,
                "metrics": job["metrics"],
                "phases": phases,
            }
        )
    note = (
        "Job: from its creation at the POST to its end, as the server records them (`created_at`, "
        "`finished_at`; the job polled every 0.5 s): reading the Parquet file from "
        "storage, the split, fitting with progress and cancel checks, validation metrics, saving, "
        "registering. Direct: the fit alone, in this process, same split and parameters, one thread. "
        f"Median of {profile.repeats} alternating runs each, after the server's first job (which starts the "
        "embedded cluster, its worker importing the libraries as it joins) is shown on its own. Job "
        "phases: the job's own `timings` (read: the dataset read and split on the worker; save: the "
        "artifact and the drift reference), other: the rest "
        "of the wall time (queueing, Dask, following, the API)."
    )
    columns = (
        "algorithm",
        "rows × features",
        "direct s",
        "job s",
        "job overhead",
        "goal",
        "met",
        "job phases s",
    )
    return Report("A training job against the library called directly", columns, rows, note), data


# ----------------------------------------------------------------------------------------- first progress


def first_progress(server: Server, work: Path, profile: Profile) -> tuple[Report, list[float]]:
    dataset = server.upload(write_parquet(make_table(50_000, seed=1), work / "progress.parquet"), "progress")
    body = {
        "model": "bench-progress",
        "dataset": dataset,
        "target": "label",
        "algorithm": "xgboost",
        "hyperparameters": {"n_estimators": 100_000, "max_depth": 4},
    }
    seconds = []
    for _ in range(profile.progress_runs):
        started = time.perf_counter()
        job = server.submit(body)
        server.follow(
            job["id"], lambda j: (j["progress"]["current"] or 0) > 0 or j["state"] in TERMINAL, 0.01
        )
        seconds.append(time.perf_counter() - started)
        expect(server.http.post(f"/api/ml/training-jobs/{job['id']}/cancel"), 202)
        server.follow(job["id"], lambda j: j["state"] in TERMINAL)
    median = statistics.median(seconds)
    row = [
        "POST → first progress update",
        f"{median:.2f}",
        f"{min(seconds):.2f}–{max(seconds):.2f}",
        "≤ 1 s",
        "yes" if median <= 1 else "no",
    ]
    note = (
        f"XGBoost, 50,000 × {FEATURES}, on the embedded cluster (1 worker, already started); the job "
        f"polled every 10 ms; {profile.progress_runs} runs, each cancelled once it reported."
    )
    return Report(
        "Time to the first progress update", ("what", "median s", "range s", "goal", "met"), [row], note
    ), seconds


# ----------------------------------------------------------------------------------------- memory limit


def memory_case(work: Path, profile: Profile) -> tuple[Report, dict[str, Any]]:
    from distributed import LocalCluster

    # The cluster's worker processes run this checkout's code, as the server does (spawned processes start
    # with this one's sys.path).
    sys.path.insert(0, str(ROOT / "src"))
    path = write_big_parquet(profile.memory_rows, work / "big.parquet")
    in_memory = profile.memory_rows * (FEATURES + 1) * 8
    rows: list[list[str]] = []
    found: dict[str, Any] = {
        "rows": profile.memory_rows,
        "float64_bytes": in_memory,
        "memory_limit": profile.memory_limit,
        "file_bytes": path.stat().st_size,
    }
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        memory_limit=int(profile.memory_limit),
    ) as cluster:
        server = Server(work, "memory", scheduler=str(cluster.scheduler_address))
        try:
            server.wait()
            dataset = server.upload(path, "big")
            body = {
                "model": "bench-big",
                "dataset": dataset,
                "target": "label",
                "algorithm": "xgboost",
                "hyperparameters": {"n_estimators": 20, "max_depth": 6},
                "distributed": True,
            }
            for workers in (1, 2):
                if workers == 2:
                    cluster.scale(2)
                    cluster.wait_for_workers(2)
                started = time.perf_counter()
                job = server.submit(body)
                done = server.follow(job["id"], lambda j: j["state"] in TERMINAL, 0.25)
                seconds = time.perf_counter() - started
                outcome = (
                    done["state"]
                    if done["state"] != "succeeded"
                    else f"succeeded, {done['metrics']['accuracy']:.3f} accuracy"
                )
                rows.append(
                    [
                        f"{workers} worker{'s' if workers > 1 else ''}",
                        outcome,
                        f"{seconds:.1f}",
                        (done.get("error") or "")[:400],
                    ]
                )
                found[f"workers_{workers}"] = {
                    "state": done["state"],
                    "seconds": seconds,
                    "error": done.get("error"),
                    "metrics": done["metrics"],
                }
        finally:
            server.stop()
    note = (
        f"{profile.memory_rows:,} rows × {FEATURES + 1} columns: {in_memory / 1e9:.2f} GB as float64 "
        f"({path.stat().st_size / 1e9:.2f} GB of float32 Parquet), each worker's memory_limit "
        f"{profile.memory_limit / 1e9:.1f} GB; XGBoost, 20 rounds, `distributed: true`, the workers reading "
        "their row groups from the storage folder."
    )
    columns = ("cluster", "outcome", "POST to end s", "error shown to the user")
    return Report("A dataset past one worker's memory limit (xgboost.dask)", columns, rows, note), found


# ----------------------------------------------------------------------------------------------- running


def bench(args: argparse.Namespace, work: Path) -> None:
    profile = PROFILES["quick" if args.quick else "full"]
    parts = set(args.parts.split(","))
    console.print(f"profile {profile.name}; work folder {work}")
    reports: list[Report] = []
    data: dict[str, Any] = {"profile": vars(profile)}
    if parts & {"direct", "progress"}:
        server = Server(work, "embedded")
        try:
            server.wait()
            warm = server.upload(write_parquet(make_table(2000, seed=2), work / "warm.parquet"), "warm")
            started = time.perf_counter()
            _, _job = job_wall(server, warm, "xgboost", {"n_estimators": 5})
            data["first_job_seconds"] = time.perf_counter() - started  # starts the embedded cluster
            if "direct" in parts:
                console.print("a job against the library called directly")
                report, data["direct"] = job_vs_direct(server, work, profile)
                reports.append(report)
            if "progress" in parts:
                console.print("time to the first progress update")
                report, data["first_progress"] = first_progress(server, work, profile)
                reports.append(report)
        finally:
            server.stop()
    if "memory" in parts:
        console.print("a dataset past one worker's memory limit")
        report, data["memory"] = memory_case(work, profile)
        reports.append(report)
    env = [
        ["profile", profile.name],
        ["cores", str(os.cpu_count())],
        ["load average at end", json.dumps(load_average())],
    ]
    if "first_job_seconds" in data:
        env.append(["first job (starts the embedded cluster) s", f"{data['first_job_seconds']:.1f}"])
    reports.insert(0, Report("Environment", ("what", "value"), env))
    for report in reports:
        console.print(to_rich(report))
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/training.py", *sys.argv[1:]])
    (RESULTS / "training.md").write_text(
        "\n".join([f"# Training benchmark\n\n`{command}`\n", *map(to_markdown, reports)])
    )
    (RESULTS / "training.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    console.print(f"written {RESULTS / 'training.md'} and {RESULTS / 'training.json'}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the rows, fewer rounds (a few minutes)"
    )
    parser.add_argument("--parts", default="direct,progress,memory", help="comma-separated subset")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    args = parser.parse_args(argv)
    in_work_folder("mlplatform-bench-training-", args.keep, lambda work: bench(args, work))


if __name__ == "__main__":
    main()
