"""Compiling scikit-learn forests to ONNX: skl2onnx against our builder from the trees' arrays (trees.py).

    python benchmarks/forest_compile.py [--quick]

For each forest (fitted once on synthetic rows): the conversion time of each, ONNX Runtime's session start,
the largest probability difference from scikit-learn and the number of labels that differ on held-out rows
(rows with missing values included), and one row's prediction through each session. Same box, same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console
from rich.table import Table
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor

from mlplatform.serving.runtimes.trees import forest_to_onnx

FEATURES = 30
CHECK_ROWS = 20_000


def data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The training benchmark's rows: a label from five features and one interaction, with noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    signal = x[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.3]) + 0.5 * x[:, 5] * x[:, 6]
    return x, signal + rng.normal(scale=0.5, size=rows)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def skl2onnx_proto(model: Any) -> onnx.ModelProto:
    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    return convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, FEATURES]))], options=options
    )


def outputs(session: ort.InferenceSession, X: np.ndarray, classifier: bool) -> np.ndarray:
    found = session.run(None, {"input": X.astype(np.float32)})
    if classifier:  # skl2onnx gives (label, probabilities); the builder probabilities only
        return np.asarray(found[-1], dtype=np.float64)
    return np.asarray(found[0], dtype=np.float64)[:, 0]


def one_row_microseconds(session: ort.InferenceSession, row: np.ndarray, calls: int = 2_000) -> float:
    feed = {"input": row.astype(np.float32)}
    for _ in range(50):
        session.run(None, feed)
    started = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller forests (about 20 s)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    cases = [
        ("random forest, 10 trees depth 8", RandomForestClassifier(n_estimators=10, max_depth=8), 200_000),
        ("random forest, 50 trees depth 16", RandomForestClassifier(n_estimators=50, max_depth=16), 160_000),
        ("extra-trees, 100 trees depth 12", ExtraTreesClassifier(n_estimators=100, max_depth=12), 160_000),
        (
            "random forest regressor, 50 trees depth 16",
            RandomForestRegressor(n_estimators=50, max_depth=16),
            160_000,
        ),
    ]
    X_check, _ = data(CHECK_ROWS, seed=1)
    X_check[::10, 3] = np.nan  # a missing value in every tenth row
    table = Table(title="Forest → ONNX: skl2onnx against the builder (same box, same run)")
    for column in (
        "forest",
        "nodes",
        "converter",
        "convert s",
        "session s",
        "max |Δ| vs sklearn",
        "labels differing",
        "1 row µs",
    ):
        table.add_column(column, justify="left" if column in ("forest", "converter") else "right")
    for name, model, rows in cases:
        X, signal = data(rows // scale)
        classifier = hasattr(model, "predict_proba")
        model.set_params(n_jobs=-1, random_state=0)
        model.fit(X, (signal > 0).astype(np.int64) if classifier else signal)
        nodes = sum(tree.tree_.node_count for tree in model.estimators_)
        want = model.predict_proba(X_check) if classifier else model.predict(X_check)
        builders: list[tuple[str, Callable[[], onnx.ModelProto]]] = [
            ("skl2onnx", lambda model=model: skl2onnx_proto(model)),
            ("builder", lambda model=model: forest_to_onnx(model, FEATURES, "input")),
        ]
        for converter, build in builders:
            convert_s, proto = timed(build)
            session_s, session = timed(
                lambda proto=proto: ort.InferenceSession(
                    proto.SerializeToString(), providers=["CPUExecutionProvider"]
                )
            )
            got = outputs(session, X_check, classifier)
            differing = ""
            if classifier:
                differing = f"{int(np.count_nonzero(np.argmax(got, 1) != np.argmax(want, 1))):,}"
            table.add_row(
                name,
                f"{nodes:,}",
                converter,
                f"{convert_s:.2f}",
                f"{session_s:.2f}",
                f"{float(np.max(np.abs(got - want))):.2g}",
                differing,
                f"{one_row_microseconds(session, X_check[:1]):.1f}",
            )
        table.add_section()
    Console(width=160).print(table)
    print(f"Held-out rows: {CHECK_ROWS:,}, every tenth with a missing value; ONNX Runtime {ort.__version__}.")


if __name__ == "__main__":
    main()
