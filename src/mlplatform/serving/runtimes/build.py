"""Choosing a model's runtime: the native library, or its ONNX compilation if outputs match."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from mlplatform.formats.base import Framework, ModelDescription
from mlplatform.serving.runtimes.base import (
    CompileReport,
    NotCompilable,
    Runtime,
    string_columns,
    synthetic_sample,
    task_is_classification,
)
from mlplatform.serving.runtimes.split import SplitRuntime, crossover, timing

# Probabilities are compared absolutely and regression values relative to the sample's largest output (see
# `compare`). float32 ONNX against the native libraries measured at most ~5e-7 on 100-600-tree ensembles and
# linear models, so 1e-5 leaves an order of magnitude of headroom and is far below any meaningful difference.
DEFAULT_TOLERANCE = 1e-5
MAX_SAMPLE_ROWS = 10_000  # bounds the time a build spends comparing engines
_REASON_CHARS = 300

_NATIVE: dict[Framework, str] = {
    Framework.SKLEARN: "mlplatform.serving.runtimes.sklearn:SklearnRuntime",
    Framework.XGBOOST: "mlplatform.serving.runtimes.xgboost:XGBoostRuntime",
    Framework.LIGHTGBM: "mlplatform.serving.runtimes.lightgbm:LightGBMRuntime",
    Framework.ONNX: "mlplatform.serving.runtimes.onnx:OnnxRuntime",
    Framework.KERAS: "mlplatform.serving.runtimes.keras:KerasRuntime",
}
_COMPILERS: dict[Framework, str] = {
    Framework.SKLEARN: "mlplatform.serving.runtimes.compile:sklearn_to_onnx",
    Framework.XGBOOST: "mlplatform.serving.runtimes.compile:xgboost_to_onnx",
    Framework.LIGHTGBM: "mlplatform.serving.runtimes.compile:lightgbm_to_onnx",
}


def build_runtime(
    model: Any,
    description: ModelDescription,
    *,
    sample: np.ndarray | None = None,
    compile: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[Runtime, CompileReport]:
    """The runtime that should serve `model`, and a report of why.

    With `compile`, tree ensembles and linear models are converted to ONNX and both engines predict
    `sample` (default: synthetic rows around zero); the compiled one is kept only if labels agree exactly and
    the largest difference is within `tolerance`. Conversion failures never raise: the native runtime serves
    and the report says why. An unsupported model or an inconsistent description raises ValueError.
    """
    native = native_runtime(model, description)
    framework = description.framework
    if not compile:
        return native, _kept(native, tolerance, "compilation disabled")
    if framework not in _COMPILERS:
        return native, _kept(native, tolerance, f"{framework.value} models are served by their own runtime")
    if string_columns(description):
        return native, _kept(native, tolerance, "string features are encoded by the model's own library")
    rows = _sample_rows(sample, native.n_features)
    compiler: Callable[[Any, ModelDescription, int], Runtime] = _load(_COMPILERS[framework])
    try:
        compiled = compiler(model, description, native.n_features)
    except NotCompilable as exc:
        return native, _kept(native, tolerance, str(exc))
    except Exception as exc:  # converters fail in many ways; the native runtime still serves
        return native, _kept(native, tolerance, f"conversion to ONNX failed: {_describe(exc)}")
    try:
        accepted, diff, why = compare(native, compiled, rows, tolerance)
    except Exception as exc:  # a graph that converts but cannot run on the sample is rejected like a mismatch
        return native, _kept(native, tolerance, f"the compiled model failed on the sample: {_describe(exc)}")
    where = f"{len(rows)} {'sample' if sample is not None else 'synthetic'} rows"
    if accepted:
        report = CompileReport(compiled.name, True, diff, tolerance, f"ONNX matches on {where}; {why}")
        return _with_batch_engine(compiled, native, rows, report)
    return native, CompileReport(native.name, False, diff, tolerance, f"ONNX rejected on {where}; {why}")


def _with_batch_engine(
    compiled: Runtime, native: Runtime, rows: np.ndarray, report: CompileReport
) -> tuple[Runtime, CompileReport]:
    """Compiled trees win on a few rows, but a native library can be faster per row on large batches
    (XGBoost's blocked predictor measured 2.2 µs per row against ONNX Runtime's 5.6 on our reference
    model): time both, and let the native engine take batches from the row count where it gets ahead."""
    try:
        small, large = timing(compiled, rows), timing(native, rows)
    except Exception:  # timing is an optimisation: the compiled engine serves everything
        return compiled, report
    per_row = {compiled.name: round(small.per_row * 1e6, 2), native.name: round(large.per_row * 1e6, 2)}
    threshold = crossover(small, large)
    if threshold is None:
        return compiled, replace(report, microseconds_per_row=per_row)
    return SplitRuntime(compiled, native, threshold), replace(
        report, batch_runtime=native.name, batch_threshold=threshold, microseconds_per_row=per_row
    )


def native_runtime(model: Any, description: ModelDescription) -> Runtime:
    runtime_class: Callable[[Any, ModelDescription], Runtime] = _load(_NATIVE[description.framework])
    return runtime_class(model, description)


def compare(
    native: Runtime, compiled: Runtime, sample: np.ndarray, tolerance: float
) -> tuple[bool, float | None, str]:
    """Whether `compiled` reproduces `native` on `sample`, the largest absolute difference, and a reason.

    Labels must agree exactly. Probabilities may differ by at most `tolerance`; regression values by at most
    `tolerance` × max(1, largest |value| on the sample), as float32 error grows with the output's magnitude.
    """
    with np.errstate(all="ignore"):  # overflow on extreme sample rows shows up in the outputs compared below
        expected, actual = native.predict(sample), compiled.predict(sample)
    labels_equal = True
    if task_is_classification(native.description):
        labels_equal = np.array_equal(expected.values, actual.values)
        if expected.probabilities is None:
            return labels_equal, None, _label_reason(expected.values, actual.values)
        if actual.probabilities is None:
            return False, None, "the compiled model gives no probabilities"
        want, got, scale, what = expected.probabilities, actual.probabilities, 1.0, "probabilities"
    else:
        want, got, what = np.asarray(expected.values, float), np.asarray(actual.values, float), "values"
        scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    if want.shape != got.shape:
        return False, None, f"{what} have shape {got.shape}, expected {want.shape}"
    diff = _max_abs_diff(want, got)
    if diff is None:
        return False, None, f"{what} are NaN where the native ones are not (or the reverse)"
    allowed = tolerance * scale
    within = diff <= allowed
    bound = f"max |Δ {what}| {diff:.3g} {'≤' if within else '>'} {allowed:.3g}"
    if not labels_equal:
        return False, diff, f"{_label_reason(expected.values, actual.values)}; {bound}"
    return within, diff, f"labels identical, {bound}" if task_is_classification(native.description) else bound


def _max_abs_diff(want: np.ndarray, got: np.ndarray) -> float | None:
    want, got = np.asarray(want, dtype=np.float64), np.asarray(got, dtype=np.float64)
    both_missing = np.isnan(want) & np.isnan(got)
    diff = np.where(both_missing, 0.0, np.abs(want - got))
    largest = float(np.max(diff, initial=0.0))
    return None if np.isnan(largest) else largest


def _label_reason(want: np.ndarray, got: np.ndarray) -> str:
    if want.shape != got.shape:
        return f"labels have shape {got.shape}, expected {want.shape}"
    differing = int(np.count_nonzero(want != got))
    return "labels identical" if differing == 0 else f"labels differ on {differing} of {len(want)} rows"


def _sample_rows(sample: np.ndarray | None, n_features: int) -> np.ndarray:
    if sample is None:
        return synthetic_sample(n_features)
    rows = np.asarray(sample, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != n_features or len(rows) == 0:
        raise ValueError(
            f"the sample must be a non-empty 2-D array of {n_features} columns, not {rows.shape}"
        )
    return rows[:MAX_SAMPLE_ROWS]


def _kept(native: Runtime, tolerance: float, reason: str) -> CompileReport:
    return CompileReport(native.name, False, None, tolerance, reason)


def _describe(exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:_REASON_CHARS]


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
