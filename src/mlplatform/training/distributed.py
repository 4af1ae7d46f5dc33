"""XGBoost and LightGBM across every Dask worker (`xgboost.dask`, `lightgbm.dask`), reading Parquet in place.

`run_distributed(spec)` runs inside the job's own Dask task: it secedes (`worker_client`), has the workers
read the dataset's Parquet row groups straight from storage (pyarrow's S3 or local filesystem: the data never
passes through the API process nor this task), holds out a random share of each partition for validation,
trains with the library's Dask estimator and returns what `worker.run_job` returns (plus `workers`, those
that trained). Progress is reported by one training worker. A cancel must stop every worker, or the others
would wait on the collective: XGBoost's ranks agree on it with an allreduce each round; a LightGBM worker
that sees it closes its network, which fails its peers at once. Validation metrics are `fitting.evaluate`
on a random sample of at most EVALUATION_ROWS held-out rows, brought to this task.

XGBoost's rank 0 writes a checkpoint every `jobs.checkpoint-every` rounds. When a worker that trains dies, the
others' collective fails at once; the task raises `PeerLost`, the job runs again (a new attempt, up to
`jobs.max-attempts`) on the workers there are, and XGBoost continues from the checkpoint. `lightgbm.dask`
cannot start from an existing model, so a LightGBM job runs again from round 0.
"""

from __future__ import annotations

import inspect
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from mlplatform.errors import InvalidInput
from mlplatform.formats.base import Task
from mlplatform.training.algorithms import ALGORITHMS, estimator_class, seeded
from mlplatform.training.checkpoints import WorkerCheckpoints, checkpoints_for, resume_point
from mlplatform.training.fitting import evaluate, xgboost_booster
from mlplatform.training.progress import JobCancelled, Reporter
from mlplatform.training.recovery import PeerLost

LIBRARIES = frozenset({"xgboost", "lightgbm"})
# Worker memory a job needs: its float64 columns, plus about 40 % more while XGBoost builds its quantised
# matrix (measured: 8.5 M rows × 31 on two workers). It may use this share of the workers' memory limits,
# less what they already hold: a running task goes on past Dask's 80 % pause; the nanny restarts at 95 %.
MEMORY_FACTOR = 1.4
MEMORY_SHARE = 0.9
EVALUATION_ROWS = 200_000  # validation metrics on a random sample of at most this many held-out rows
REFERENCE_ROWS = 5_000  # training rows kept with the version as its drift reference (as single-worker jobs)
LABEL = "__mlplatform_label__"
PEER_LOSS_WAIT = 5.0  # seconds a failed fit waits for the scheduler to report a worker that died
LIGHTGBM_PART = "_train_part-"  # the keys of lightgbm.dask's per-worker training tasks
PARTS_END_WAIT = 60.0  # seconds a failed LightGBM fit waits for its parts on the other workers to end


def wants_distributed(
    asked: bool | None,
    *,
    algorithm: str,
    dataset_format: str,
    rows: int,
    threshold: int,
    string_features: bool = False,
    validation_dataset: bool = False,
) -> bool:
    """Whether a job trains across the workers: when asked, or (`asked` None) past `threshold` rows for the
    boosting libraries on Parquet with numeric features and a held-out share for validation. Asking for it
    where it cannot run is refused, naming `distributed`."""
    library = ALGORITHMS[algorithm].library
    if asked is None:
        possible = library in LIBRARIES and dataset_format == "parquet"
        return possible and not (string_features or validation_dataset) and rows > threshold
    for unsupported, why in (
        (string_features, "string feature columns"),
        (validation_dataset, "a separate validation dataset (it holds out a share of each partition)"),
    ):
        if asked and unsupported:
            problem = f"distributed training does not take {why} yet"
            raise InvalidInput(
                f"distributed: {problem}", details=[{"field": "distributed", "problem": problem}]
            )
    if asked and library not in LIBRARIES:
        problem = f"{algorithm} trains on one worker; distributed training is for xgboost and lightgbm"
        raise InvalidInput(f"distributed: {problem}", details=[{"field": "distributed", "problem": problem}])
    if asked and dataset_format != "parquet":
        problem = (
            "distributed training has each worker read its own Parquet row groups; this dataset is "
            f"{dataset_format}: upload it as Parquet"
        )
        raise InvalidInput(f"distributed: {problem}", details=[{"field": "distributed", "problem": problem}])
    return asked


# --- reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """Rows [start, stop) of one Parquet row group: one partition of the Dask DataFrame."""

    row_group: int
    start: int
    stop: int


def filesystem(storage: dict[str, Any], key: str) -> tuple[Any, str]:
    """A pyarrow filesystem for the artifact store's URL (same `s3://bucket/prefix?endpoint=&region=` form)
    and the path of `key` on it."""
    import pyarrow.fs as pafs

    parts = urlsplit(storage["url"])
    if parts.scheme == "file":
        root = Path(storage["url"].removeprefix("file://")).resolve()
        return pafs.LocalFileSystem(), str(root / key)
    options = dict(parse_qsl(parts.query))
    endpoint = options.get("endpoint") or None
    scheme = "https"
    if endpoint and "://" in endpoint:
        scheme, _, endpoint = endpoint.partition("://")
    s3 = pafs.S3FileSystem(
        access_key=storage.get("access_key_id"),
        secret_key=storage.get("secret_access_key"),
        region=options.get("region") or None,
        endpoint_override=endpoint,
        scheme=scheme,
        connect_timeout=2,
        request_timeout=float(options.get("timeout") or 30),
    )
    prefix = parts.path.strip("/")
    return s3, "/".join(p for p in (parts.netloc, prefix, key) if p)


def memory_problem(rows: int, columns: int, workers: dict[str, Any]) -> str | None:
    """Why the workers (the scheduler's `workers` info) cannot hold the dataset, if they cannot: said before
    any of them is loaded past its limit and restarted. Workers without a memory limit are not checked."""
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    if not limits or not all(limits):
        return None
    needed = rows * columns * 8 * MEMORY_FACTOR
    used = sum(int((w.get("metrics") or {}).get("memory") or 0) for w in workers.values())
    available = sum(limits) * MEMORY_SHARE - used
    if needed <= available:
        return None
    return (
        f"the dataset needs about {needed / 1e9:.2f} GB of worker memory ({rows:,} rows × {columns} columns "
        f"as float64, plus the library's working memory) but the {len(limits)} Dask worker(s) can hold about "
        f"{max(available, 0) / 1e9:.2f} GB ({MEMORY_SHARE:.0%} of their memory limits, less what they "
        "already use): add workers or give them more memory"
    )


def plan_parts(row_groups: list[int], workers: int) -> list[Part]:
    """One partition per row group; row groups are sliced when there are fewer of them than workers (each
    slice then reads its whole group: datasets meant for several workers are best written in many groups)."""
    slices = max(1, math.ceil(workers / max(len(row_groups), 1)))
    parts: list[Part] = []
    for group, rows in enumerate(row_groups):
        step = max(1, math.ceil(rows / slices))
        parts.extend(Part(group, start, min(start + step, rows)) for start in range(0, rows, step))
    return parts


def read_columns(part: Part, spec: dict[str, Any], columns: list[str]) -> Any:
    """Some columns of one partition, as a pandas DataFrame, read by the worker that runs it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = filesystem(spec["storage"], spec["dataset_key"])
    with fs.open_input_file(path) as source:
        table = pq.ParquetFile(source).read_row_group(part.row_group, columns=columns)
    frame = table.slice(part.start, part.stop - part.start).to_pandas()
    del table
    pa.default_memory_pool().release_unused()  # else Arrow's allocator keeps what the read used
    return frame


def labels_of(part: Part, spec: dict[str, Any]) -> list[Any]:
    """A partition's distinct target values (only that column is read)."""
    column = read_columns(part, spec, [spec["target"]])[spec["target"]]
    return list(column.dropna().unique().tolist())


def load_part(part: Part, spec: dict[str, Any], classes: list[Any]) -> tuple[Any, Any, Any, Any]:
    """One partition as (X_train, y_train, X_valid, y_valid): features float64, labels as class codes (or
    float64 for a regression), a random `validation_fraction` of its rows held out (seeded per partition).
    Reading, encoding and splitting in one task keeps only the result in the worker's memory."""
    features, target = spec["features"], spec["target"]
    frame = read_columns(part, spec, [*features, target])
    frame = frame[frame[target].notna()]
    X = frame[features].to_numpy(dtype=np.float64)
    if classes:
        y = np.searchsorted(np.asarray(classes, dtype=object), frame[target].to_numpy(dtype=object))
        y = y.astype(np.int64)
    else:
        y = frame[target].to_numpy(dtype=np.float64)
    del frame
    rng = np.random.default_rng([spec.get("seed", 0), part.row_group, part.start])
    held = rng.random(len(X)) < float(spec["validation_fraction"])
    return X[~held], y[~held], X[held], y[held]


def shapes(loaded: tuple[Any, ...]) -> list[tuple[int, ...]]:
    return [array.shape for array in loaded]


# --- running ------------------------------------------------------------------------------------------------


def run_distributed(spec: dict[str, Any]) -> dict[str, Any]:
    import distributed
    import pyarrow.parquet as pq

    reporter = Reporter.for_spec(spec)
    cancelled = {"status": "cancelled", "worker": reporter.worker}
    task = Task(spec["task"])
    fs, path = filesystem(spec["storage"], spec["dataset_key"])
    with fs.open_input_file(path) as source:
        metadata = pq.ParquetFile(source).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    with distributed.worker_client() as client:
        info = client.scheduler_info(n_workers=-1)["workers"]
        problem = memory_problem(sum(sizes), len(spec["features"]) + 1, info)
        if problem:
            raise MemoryError(problem)
        arrays, classes = _load(client, spec, task, sizes, sorted(info))
        if reporter.cancel_asked():
            return cancelled
        holding = sorted({w for ws in client.who_has(arrays[0]).values() for w in ws})
        try:
            model = _fit(spec, task, reporter, client, holding, arrays)
        except JobCancelled:
            return cancelled
        except Exception as exc:
            if reporter.cancel_asked() or _cancelled(reporter):
                return cancelled
            if not isinstance(exc, distributed.KilledWorker) and (gone := _gone(client, holding)):
                # A peer died mid-training: the job runs again (from its checkpoint, for XGBoost).
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise PeerLost(
                    f"Dask worker(s) {', '.join(gone)} training the job went away: {type(exc).__name__}: "
                    f"{first}"
                ) from exc
            raise _clearer(exc, sizes, spec) from exc
        if reporter.cancel_asked():
            return cancelled
        filename, artifact, local = _save(spec, task, model)
        X_eval, y_eval = _sample(client, arrays[2], arrays[3], EVALUATION_ROWS, spec.get("seed", 0))
        X_reference, _ = _sample(client, arrays[0], arrays[1], REFERENCE_ROWS, spec.get("seed", 0))
    return {
        "status": "succeeded",
        "worker": reporter.worker,
        "workers": holding,
        "artifact": artifact,
        "filename": filename,
        "metrics": evaluate(local, task, X_eval, y_eval, None),
        "classes": classes or None,
        "reference": _parquet(X_reference, spec["features"]),
    }


def _load(
    client: Any, spec: dict[str, Any], task: Task, sizes: list[int], workers: list[str]
) -> tuple[tuple[Any, Any, Any, Any], list[Any]]:
    """X and y for training and validation as Dask arrays held on the workers (one copy: each partition is
    read, encoded and split in one task), and the class labels of a classification."""
    import operator

    import dask.array
    import distributed
    from dask.delayed import delayed as lazy

    da: Any = dask.array  # untyped libraries
    dist: Any = distributed
    delayed: Any = lazy
    parts = plan_parts(sizes, len(workers))
    # Placed round-robin: the scheduler alone may put a few partitions all on one worker. Other workers are
    # allowed: a partition lost with its worker is read again elsewhere instead of waiting for it forever.
    placed = [[workers[i % len(workers)]] for i in range(len(parts))]
    classes: list[Any] = []
    if task is Task.CLASSIFICATION:
        found = client.gather(
            [
                client.submit(labels_of, p, spec, workers=w, allow_other_workers=True, pure=False)
                for p, w in zip(parts, placed, strict=True)
            ]
        )
        classes = sorted({label for labels in found for label in labels})
        if len(classes) < 2:
            raise ValueError(f"target {spec['target']!r} has a single class: nothing to learn")
    loaded = [
        client.submit(load_part, p, spec, classes, workers=w, allow_other_workers=True, pure=False)
        for p, w in zip(parts, placed, strict=True)
    ]
    dist.wait(loaded)
    layout = client.gather(
        [
            client.submit(shapes, f, workers=w, allow_other_workers=True)
            for f, w in zip(loaded, placed, strict=True)
        ]
    )
    y_type = np.int64 if classes else np.float64
    arrays = []
    for index, dtype in enumerate((np.float64, y_type, np.float64, y_type)):
        pieces = [
            da.from_delayed(delayed(operator.getitem)(f, index), shape=layout[i][index], dtype=dtype)
            for i, f in enumerate(loaded)
        ]
        arrays.append(da.concatenate(pieces))
    X_train, y_train, X_valid, y_valid = client.persist(arrays)  # the same arrays, under their own keys
    dist.wait([X_train, y_train, X_valid, y_valid])
    return (X_train, y_train, X_valid, y_valid), classes


def _sample(client: Any, X: Any, y: Any, most: int, seed: int) -> tuple[Any, Any]:
    """At most `most` rows of X and y, picked at random, brought to this task."""
    rows = int(X.shape[0])
    if rows > most:
        index = np.sort(np.random.default_rng(seed).choice(rows, most, replace=False))
        X, y = X[index], y[index]
    X_local, y_local = client.gather(client.compute([X, y]))
    return X_local, y_local


def _parquet(X: Any, features: list[str]) -> bytes | None:
    """Training rows as Parquet, the version's drift reference (none from fewer than 10 rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(X) < 10:
        return None
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({name: X[:, i] for i, name in enumerate(features)}), sink)
    return bytes(sink.getvalue().to_pybytes())


def _gone(client: Any, holding: list[str], wait: float = PEER_LOSS_WAIT) -> list[str]:
    """The workers that trained and are no longer in the cluster. A failed collective is usually a peer
    that died; the scheduler may take a moment to hear of it, so look for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        present = set(client.scheduler_info(n_workers=-1)["workers"])
        gone = [w for w in holding if w not in present]
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(0.25)


def _cancelled(reporter: Reporter) -> bool:
    return bool(reporter.event.is_set())


def _clearer(exc: Exception, sizes: list[int], spec: dict[str, Any]) -> Exception:
    """A worker killed for its memory limit surfaces as KilledWorker: say what it means for this job."""
    import distributed

    if isinstance(exc, distributed.KilledWorker):
        columns = len(spec["features"]) + 1
        return MemoryError(
            f"a Dask worker died holding its share of the dataset ({sum(sizes):,} rows × {columns} columns, "
            f"{len(sizes)} row groups), most likely past its memory limit: add workers or give them more "
            f"memory ({exc})"
        )
    return exc


def _fit(
    spec: dict[str, Any],
    task: Task,
    reporter: Reporter,
    client: Any,
    workers: list[str],
    data: tuple[Any, Any, Any, Any],
) -> Any:
    single = estimator_class(spec["algorithm"], task)
    params = seeded(single, spec["hyperparameters"], spec.get("seed", 0))
    total = int(params.get("n_estimators") or 100)
    name = single.__name__  # XGBClassifier → xgboost.dask.DaskXGBClassifier
    X_train, y_train, X_valid, y_valid = data
    library = ALGORITHMS[spec["algorithm"]].library
    if library == "xgboost":
        import xgboost.dask

        with checkpoints_for(spec, "ubj") as saved:  # a run again after a lost worker continues from here
            done, start = resume_point(saved, total, xgboost_booster)
        if start is not None:
            reporter.resume(done)
        estimator = getattr(xgboost.dask, f"Dask{name}")
        callback = _xgboost_progress(spec, total, done)
        params["n_estimators"] = total - done  # a resumed run does the remaining rounds only
        model = estimator(**params, callbacks=[callback])
        model.client = client
        model.fit(X_train, y_train, eval_set=[(X_valid, y_valid)], verbose=False, xgb_model=start)
        return model
    import lightgbm.dask

    estimator = getattr(lightgbm.dask, f"Dask{name}")
    params.setdefault("verbose", -1)
    model = estimator(client=client, **params)
    progress = _lightgbm_progress(spec, total, workers[0])
    evaluation: dict[str, Any]
    if "eval_X" in inspect.signature(model.fit).parameters:  # lightgbm >= 4.7 deprecates eval_set
        evaluation = {"eval_X": (X_valid,), "eval_y": (y_valid,)}
    else:
        evaluation = {"eval_set": [(X_valid, y_valid)]}
    try:
        model.fit(X_train, y_train, callbacks=[progress], **evaluation)
    except BaseException:
        _until_parts_end(client, workers)
        raise
    return model


def _until_parts_end(client: Any, workers: list[str], wait: float = PARTS_END_WAIT) -> None:
    """Wait (at most `wait` seconds) until no part of a failed or cancelled LightGBM fit still runs on the
    workers. `lightgbm.dask` raises as soon as one part fails, while its peers end a moment later (their next
    socket read fails): the job must not end before them, or the next job's part on the same worker process
    has its network freed by the old part's (LightGBM's network is global to the process)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            running = client.processing()  # every worker's: one of `workers` may have died
        except Exception:  # best effort: the fit's own error is what the job reports
            return
        keys = (key for worker in workers for key in running.get(worker, ()))
        if not any(str(key).startswith(LIGHTGBM_PART) for key in keys):
            return
        time.sleep(0.1)


def _xgboost_progress(spec: dict[str, Any], total: int, done: int) -> Any:
    """Rank 0 reports and writes the checkpoints (every rank holds the same model); every rank stops on the
    same round, agreed with an allreduce of the cancel flag. `done`: rounds a resumed run starts from."""
    import xgboost
    from xgboost import collective

    class Progress(xgboost.callback.TrainingCallback):
        def __init__(self) -> None:
            self.reporter: Reporter | None = None
            self.checkpoints: WorkerCheckpoints | None = None

        def before_training(self, model: Any) -> Any:
            self.reporter = Reporter.for_spec(spec)
            if done:
                self.reporter.resume(done)
            every = int(spec.get("checkpoint_every") or 0)
            if every > 0 and collective.get_rank() == 0:
                self.checkpoints = WorkerCheckpoints(spec["storage"], spec["job_id"], every, "ubj")
            return model

        def after_training(self, model: Any) -> Any:
            if self.checkpoints is not None:
                self.checkpoints.close()
                self.checkpoints = None
            return model

        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            assert self.reporter is not None
            if collective.get_rank() == 0:
                name, value = None, None
                for data in evals_log.values():
                    for metric_name, values in data.items():
                        name, value = metric_name, float(values[-1])
                rounds = done + epoch + 1  # xgboost counts the rounds of this call only
                self.reporter.update(rounds, total, "round", name, value)
                saving = self.checkpoints is not None and self.checkpoints.due(rounds, total)
                if saving and self.checkpoints is not None and not self.reporter.cancel_now():
                    self.checkpoints.save(rounds, bytes(model.save_raw("ubj")))
            asked = np.array([1.0 if self.reporter.cancel_asked() else 0.0])
            return bool(collective.allreduce(asked, collective.Op.MAX)[0] > 0)

    return Progress()


def _lightgbm_progress(spec: dict[str, Any], total: int, reporting: str) -> Any:
    """One worker reports; any worker that sees the cancel closes its network and stops, so its peers' next
    socket read fails at once (connection reset): the whole fit ends within a round, found cancelled."""
    state: dict[str, Any] = {}

    def progress(env: Any) -> None:
        import distributed

        if not state:
            state["reporter"] = Reporter.for_spec(spec)
            state["lead"] = distributed.get_worker().address == reporting
        reporter: Reporter = state["reporter"]
        if state["lead"]:
            name, value = None, None
            if env.evaluation_result_list:
                _, name, value, _ = env.evaluation_result_list[0][:4]
            reporter.update(env.iteration + 1, total, "round", name, value)
        if reporter.cancel_asked():
            import lightgbm.basic

            # Close this worker's sockets: a peer waiting on them fails at once instead of at `time_out`.
            library: Any = lightgbm.basic
            library._LIB.LGBM_NetworkFree()
            raise JobCancelled

    return progress


def _save(spec: dict[str, Any], task: Task, model: Any) -> tuple[str, bytes, Any]:
    """The model in the single-worker formats (XGBoost UBJ, LightGBM text), and a local copy to evaluate."""
    library = ALGORITHMS[spec["algorithm"]].library
    with tempfile.TemporaryDirectory(prefix="mlplatform-train-") as folder:
        if library == "xgboost":
            path = Path(folder) / "model.ubj"
            model.get_booster().save_model(str(path))
            local = estimator_class(spec["algorithm"], task)()
            local.load_model(bytearray(path.read_bytes()))
        else:
            path = Path(folder) / "model.txt"
            model.booster_.save_model(str(path))
            local = model.to_local()
        return path.name, path.read_bytes(), local
