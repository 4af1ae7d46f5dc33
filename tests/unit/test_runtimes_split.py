"""Split runtimes: the compiled engine for a few rows, the native one for large batches when it is faster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xgboost
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification

from mlplatform.formats.base import ArtifactFormat, Feature, Framework, ModelDescription, Task
from mlplatform.serving.runtimes import build, build_runtime
from mlplatform.serving.runtimes.onnx import OnnxRuntime
from mlplatform.serving.runtimes.split import SplitRuntime, Timing, crossover, timing
from mlplatform.serving.runtimes.xgboost import XGBoostRuntime
from tests.fixtures_models import N_FEATURES, linear_onnx

REGRESSION = ModelDescription(
    framework=Framework.ONNX,
    format=ArtifactFormat.ONNX,
    flavour="test",
    task=Task.REGRESSION,
    features=tuple(Feature(f"x{i}") for i in range(N_FEATURES)),
)


def test_crossover_is_where_the_per_row_gain_pays_for_the_fixed_cost() -> None:
    compiled = Timing(one_row=20e-6, per_row=5.5e-6)  # the XGBoost reference model, as measured
    native = Timing(one_row=150e-6, per_row=2.2e-6)
    threshold = crossover(compiled, native)
    assert threshold == 41
    assert native.seconds(threshold) < compiled.seconds(threshold)
    assert native.seconds(threshold - 1) >= compiled.seconds(threshold - 1)


def test_no_split_unless_the_batch_engine_is_clearly_faster() -> None:
    compiled = Timing(one_row=20e-6, per_row=5.5e-6)
    assert crossover(compiled, Timing(one_row=150e-6, per_row=4.5e-6)) is None  # 18 % faster: noise-level
    assert crossover(compiled, Timing(one_row=30e-6, per_row=9.6e-6)) is None  # slower
    assert crossover(compiled, Timing(one_row=10e-6, per_row=1e-6)) == 2  # faster everywhere


def test_split_runtime_sends_small_inputs_to_one_engine_and_batches_to_the_other() -> None:
    half = OnnxRuntime(linear_onnx(weight=0.5), REGRESSION)
    double = OnnxRuntime(linear_onnx(weight=2.0), REGRESSION)
    runtime = SplitRuntime(half, double, threshold=3)
    X = np.ones((3, N_FEATURES))
    assert_allclose(runtime.predict(X[:2]).values, half.predict(X[:2]).values)
    assert_allclose(runtime.predict(X).values, double.predict(X).values)
    assert runtime.name == half.name and runtime.n_features == N_FEATURES
    timed = timing(half, X)
    assert timed.one_row > 0 and timed.per_row > 0


@pytest.mark.parametrize(("native_per_row", "split"), [(1e-6, True), (50e-6, False)])
def test_build_records_the_batch_engine_it_chose(
    native_per_row: float, split: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = make_classification(400, N_FEATURES, random_state=0)
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    description = ModelDescription(
        framework=Framework.XGBOOST,
        format=ArtifactFormat.XGBOOST_UBJ,
        flavour="XGBClassifier",
        task=Task.CLASSIFICATION,
        features=tuple(Feature(f"x{i}") for i in range(N_FEATURES)),
        classes=(0, 1),
    )

    # Timings are what the box measures; fixed here so that the choice, not the clock, is under test.
    def fixed_timing(runtime: Any, sample: np.ndarray) -> Timing:
        if isinstance(runtime, OnnxRuntime):
            return Timing(one_row=20e-6, per_row=5e-6)
        return Timing(one_row=150e-6, per_row=native_per_row)

    monkeypatch.setattr(build, "timing", fixed_timing)
    runtime, report = build_runtime(model, description, sample=X)
    assert report.compiled and report.runtime == "onnxruntime"
    assert report.microseconds_per_row == {"onnxruntime": 5.0, "xgboost": native_per_row * 1e6}
    if split:
        assert isinstance(runtime, SplitRuntime)
        assert isinstance(runtime.small, OnnxRuntime) and isinstance(runtime.large, XGBoostRuntime)
        assert report.batch_runtime == "xgboost" and report.batch_threshold == runtime.threshold == 34
    else:
        assert isinstance(runtime, OnnxRuntime)
        assert report.batch_runtime is None and report.batch_threshold is None
    # Either way every input size gets the model's own answers.
    for rows in (X[:1], X[:40], X):
        result = runtime.predict(rows)
        assert_array_equal(result.values, model.predict(rows))
        assert_allclose(result.probabilities, model.predict_proba(rows), atol=1e-5)  # type: ignore[arg-type]
