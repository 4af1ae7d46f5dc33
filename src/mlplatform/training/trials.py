"""A search on Dask: the job's task coordinates, each trial is a training task of its own.

`run_search(spec)` runs as the job's task on a worker. Through `distributed.worker_client()` (which frees
its worker thread for trials) it submits `run_trial` tasks, at most `parallel` at once, each one a normal
`run_job` with the trial's hyperparameters: same reading, split, fit, validation and saving as a single job.
It publishes progress (trials done of the total, the best metric so far) and every finished trial through
the job's Variable, where the API process records them; it keeps only the best trial's saved model, which
is the one registered (saved as trained, not refit: its metrics are then exactly the registered model's).
A cancel stops submitting; the trials still running see the same cancel Event and stop themselves.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from mlplatform.clock import utcnow
from mlplatform.training.progress import Reporter
from mlplatform.training.schemas import SearchSpec
from mlplatform.training.search import DIRECTIONS, better, sampler_for
from mlplatform.training.worker import run_job

PUBLISH_EVERY = 0.5  # seconds between progress updates while no trial finishes
WAIT = 0.05  # seconds between looks at the running trials


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """One trial: a training job whose failure is its result, with where and when it ran."""
    import distributed

    dd: Any = distributed  # untyped library
    started_at, began = utcnow(), time.monotonic()
    try:
        result = run_job(spec)
    except Exception as exc:  # the library refused these values, or the fit broke: the search goes on
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    return {
        **result,
        "worker": dd.get_worker().address,
        "started_at": started_at.isoformat(),
        "finished_at": utcnow().isoformat(),
        "duration_seconds": time.monotonic() - began,
    }


def _trial_spec(spec: dict[str, Any], number: int, params: dict[str, Any]) -> dict[str, Any]:
    trial = {key: value for key, value in spec.items() if key != "search"}
    trial["hyperparameters"] = {**spec["hyperparameters"], **params}
    trial["job_id"] = f"{spec['job_id']}/trial-{number}"  # anything a trial keeps goes under the job's
    trial["progress_name"] = f"{spec['progress_name']}-trial-{number}"
    return trial  # same cancel Event as the job


class Search:
    """The coordinator's state: trials running and done, the best so far, what to publish."""

    def __init__(self, spec: dict[str, Any], reporter: Reporter) -> None:
        self.spec = spec
        self.reporter = reporter
        self.search = SearchSpec.model_validate(spec["search"])
        self.metric = self.search.metric or "f1"
        self.direction = DIRECTIONS[self.metric]
        self.total = self.search.trials or 1
        self.sampler = sampler_for(self.search)
        self.records: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # the best trial's run_job result (with its saved model)
        self.best_value: float | None = None
        self.published = 0.0

    def record(self, number: int, params: dict[str, Any], outcome: dict[str, Any]) -> None:
        status = outcome.get("status")
        metrics = outcome.get("metrics") or {}
        value = metrics.get(self.metric)
        error = outcome.get("error")
        if status == "succeeded" and (value is None or not math.isfinite(value)):
            status, value = "failed", None
            error = f"the validation rows gave no {self.metric} (a class missing from them?)"
        state = status if status in ("succeeded", "cancelled") else "failed"
        self.sampler.tell(number, value if state == "succeeded" else None)
        self.records.append(
            {
                "number": number,
                "params": params,
                "state": state,
                "metrics": metrics,
                "value": value if state == "succeeded" else None,
                "error": None if state == "succeeded" else error,
                "worker": outcome.get("worker"),
                "started_at": outcome.get("started_at"),
                "finished_at": outcome.get("finished_at"),
                "duration_seconds": outcome.get("duration_seconds"),
            }
        )
        if state != "succeeded" or value is None:
            return
        tie_won = self.best is not None and value == self.best_value and number < self.best["number"]
        if better(value, self.best_value, self.direction) or tie_won:
            self.best = {**outcome, "number": number, "params": params}
            self.best_value = value

    def publish(self, running: list[Any]) -> None:
        """Trials done (plus the share of the running ones) of the total; the best metric so far."""
        done = len(self.records)
        share = 0.0
        for variable in running:
            latest = variable.get()
            if latest:
                share += float(latest["progress"].get("fraction") or 0.0)
        fraction = min((done + share) / self.total, 1.0)
        elapsed = time.monotonic() - self.reporter.began
        progress = {
            "fraction": fraction,
            "current": done,
            "total": self.total,
            "unit": "trial",
            "metric_name": self.metric,
            "metric": self.best_value,
            "eta_seconds": elapsed / fraction * (1 - fraction) if fraction > 0 else None,
        }
        self.reporter.variable.set(
            {"worker": self.reporter.worker, "progress": progress, "trials": list(self.records)}
        )
        self.published = time.monotonic()


def run_search(spec: dict[str, Any]) -> dict[str, Any]:
    import distributed

    dd: Any = distributed  # untyped library
    reporter = Reporter.for_spec(spec)
    search = Search(spec, reporter)
    running: dict[Any, tuple[int, dict[str, Any], Any]] = {}  # future → number, params, its Variable
    started = 0
    run = secrets.token_hex(4)  # a resumed search's trials must not meet the keys of an earlier run's
    with dd.worker_client() as client:
        parallel = min(search.search.parallel or sum(client.nthreads().values()), search.total)
        search.publish([])
        try:
            while running or (started < search.total and not reporter.cancel_asked()):
                while started < search.total and len(running) < parallel and not reporter.cancel_now():
                    params = search.sampler.ask(started)
                    trial = _trial_spec(spec, started, params)
                    variable = dd.Variable(trial["progress_name"], client=client)
                    variable.set({})  # set before the trial reports, so reading it never waits
                    key = f"training-{spec['job_id']}-trial-{started}-{run}"
                    future = client.submit(run_trial, trial, key=key, pure=False)
                    running[future] = (started, params, variable)
                    started += 1
                finished = [future for future in running if future.done()]
                for future in finished:
                    number, params, variable = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # its worker died, say
                        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
                    variable.delete()
                    search.record(number, params, outcome)
                if finished or time.monotonic() - search.published >= PUBLISH_EVERY:
                    search.publish([variable for _, _, variable in running.values()])
                if not finished:
                    time.sleep(WAIT)
        except BaseException:  # the coordinator broke: its running trials would go on for nothing
            reporter.event.set()
            client.cancel(list(running))
            for _, _, variable in running.values():
                variable.delete()
            raise
        search.publish([])
    trials = sorted(search.records, key=lambda r: r["number"])
    if reporter.cancelled or reporter.cancel_asked():
        return {"status": "cancelled", "worker": reporter.worker, "trials": trials}
    if search.best is None:
        first = next(t for t in trials if t["state"] == "failed")
        raise RuntimeError(f"all {len(trials)} trials failed; trial {first['number']}: {first['error']}")
    best = {
        k: v for k, v in search.best.items() if k not in ("started_at", "finished_at", "duration_seconds")
    }
    number, params = best.pop("number"), best.pop("params")
    return {
        **best,
        "worker": reporter.worker,
        "trials": trials,
        "best_trial": number,
        "hyperparameters": {**spec["hyperparameters"], **params},
    }
