"""Per-row prediction latency of the reference models: library call, native runtime and the chosen runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import lightgbm
import numpy as np
import onnxruntime
import sklearn
import xgboost
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from mlplatform.formats.base import ArtifactFormat, Feature, Framework, ModelDescription, Task
from mlplatform.serving.runtimes import CompileReport, Runtime, build_runtime, native_runtime
from mlplatform.serving.runtimes.lightgbm import LightGBMRuntime
from mlplatform.serving.runtimes.xgboost import XGBoostRuntime

N_ROWS, N_FEATURES, BATCH = 50_000, 30, 1000
SINGLE_CALLS, BATCH_CALLS, BUDGET_S = 2000, 30, 1.5


def describe(framework: Framework, flavour: str) -> ModelDescription:
    return ModelDescription(
        framework=framework,
        format=ArtifactFormat.PICKLE,
        flavour=flavour,
        task=Task.CLASSIFICATION,
        features=tuple(Feature(f"f{i}") for i in range(N_FEATURES)),
        classes=(0, 1),
    )


def latencies(call: Callable[[np.ndarray], Any], inputs: list[np.ndarray], limit: int) -> np.ndarray:
    """Seconds per call, cycling through `inputs`, stopping after `limit` calls or the time budget."""
    for item in inputs[:5]:
        call(item)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < limit and (time.perf_counter() - started < BUDGET_S or len(times) < 50):
        item = inputs[len(times) % len(inputs)]
        begin = time.perf_counter()
        call(item)
        times.append(time.perf_counter() - begin)
    return np.asarray(times)


def measure(
    call: Callable[[np.ndarray], Any], rows: list[np.ndarray], batches: list[np.ndarray]
) -> list[str]:
    single = latencies(call, rows, SINGLE_CALLS) * 1e6
    batch = latencies(call, batches, BATCH_CALLS) * 1e6 / BATCH
    return [
        f"{np.percentile(single, 50):,.0f}",
        f"{np.percentile(single, 99):,.0f}",
        f"{np.median(batch):.2f}",
    ]


def main() -> None:
    console = Console(width=120)
    load = os.getloadavg()[0]
    console.print(
        f"{os.cpu_count()} cores, load {load:.2f}; "
        f"sklearn {sklearn.__version__}, xgboost {xgboost.__version__}, "
        f"lightgbm {lightgbm.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    X, y = make_classification(N_ROWS, N_FEATURES, n_informative=15, random_state=0)
    train, held_out = slice(0, N_ROWS - 5000), slice(N_ROWS - 5000, None)
    sample = X[held_out][:2000]
    rows = [X[held_out][i : i + 1] for i in range(1000)]
    batches = [X[held_out][i * BATCH : (i + 1) * BATCH] for i in range(5)]

    table = Table(title=f"Per-row latency in µs (single rows: p50/p99; {BATCH}-row batches: median per row)")
    for column in ("model", "runtime", "1 row p50", "1 row p99", f"{BATCH} rows"):
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    reports: list[tuple[str, CompileReport]] = []

    references: list[tuple[str, Framework, Callable[[], Any]]] = [
        (
            "RandomForest 100×d10",
            Framework.SKLEARN,
            lambda: RandomForestClassifier(100, max_depth=10, n_jobs=2, random_state=0).fit(
                X[train], y[train]
            ),
        ),
        (
            "XGBClassifier 200",
            Framework.XGBOOST,
            lambda: xgboost.XGBClassifier(n_estimators=200, max_depth=6, n_jobs=2).fit(X[train], y[train]),
        ),
        (
            "LGBMClassifier 200",
            Framework.LIGHTGBM,
            lambda: lightgbm.LGBMClassifier(n_estimators=200, n_jobs=2, verbose=-1).fit(X[train], y[train]),
        ),
    ]
    for label, framework, train_model in references:
        started = time.perf_counter()
        model = train_model()
        trained = time.perf_counter() - started
        # The library's own call first: building a runtime pins the model's thread settings.
        table.add_row(label, "library predict_proba", *measure(model.predict_proba, rows, batches))
        description = describe(framework, type(model).__name__)
        native = native_runtime(model, description)
        started = time.perf_counter()
        chosen, report = build_runtime(model, description, sample=sample)
        built = time.perf_counter() - started
        table.add_row("", f"native ({native.name})", *measure(native.predict, rows, batches))
        table.add_row("", f"chosen ({chosen.name})", *measure(chosen.predict, rows, batches))
        two_threads = _two_thread_runtime(model, description)
        if two_threads is not None:
            table.add_row(
                "", f"native, 2 threads ({two_threads.name})", *measure(two_threads.predict, rows, batches)
            )
        table.add_section()
        reports.append((f"{label} (trained {trained:.1f}s, runtime built {built:.1f}s)", report))

    console.print(table)
    for label, report in reports:
        console.print(f"[bold]{label}[/bold]: {report.to_dict()}")


def _two_thread_runtime(model: Any, description: ModelDescription) -> Runtime | None:
    if isinstance(model, xgboost.XGBModel):
        return XGBoostRuntime(model.get_booster().copy(), description, threads=2)
    if isinstance(model, lightgbm.LGBMModel):
        return LightGBMRuntime(model, description, threads=2)
    return None


if __name__ == "__main__":
    main()
