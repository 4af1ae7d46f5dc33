"""Compilation to ONNX: kept only when it reproduces the native runtime, otherwise the native one serves."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import onnxruntime as ort
import pytest
import xgboost
from numpy.testing import assert_allclose, assert_array_equal
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from mlplatform.formats.base import ArtifactFormat, Feature, Framework, ModelDescription, Task
from mlplatform.serving.runtimes import DEFAULT_TOLERANCE, build_runtime, native_runtime
from mlplatform.serving.runtimes import compile as compile_module
from mlplatform.serving.runtimes.build import compare
from mlplatform.serving.runtimes.onnx import OnnxRuntime
from mlplatform.serving.runtimes.split import SplitRuntime

N_FEATURES = 5
ANIMALS = np.array(["cat", "dog", "emu"])


def describe(framework: Framework, classes: tuple[Any, ...] | None = None) -> ModelDescription:
    return ModelDescription(
        framework=framework,
        format=ArtifactFormat.PICKLE,
        flavour="test",
        task=Task.CLASSIFICATION if classes is not None else Task.REGRESSION,
        features=tuple(Feature(f"x{i}") for i in range(N_FEATURES)),
        classes=classes,
    )


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(300, N_FEATURES, n_informative=3, random_state=4)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def multiclass() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(  # type: ignore[no-any-return]
        300, N_FEATURES, n_informative=3, n_classes=3, random_state=5
    )


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(300, N_FEATURES, noise=2.0, random_state=6)
    return X, y * 20 + 500


CLASSIFIERS = {
    "random-forest": lambda: RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0),
    "extra-trees": lambda: ExtraTreesClassifier(n_estimators=10, max_depth=5, random_state=0),
    "gradient-boosting": lambda: GradientBoostingClassifier(n_estimators=10, random_state=0),
    "decision-tree": lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
    "logistic": lambda: LogisticRegression(max_iter=500),
    "scaled-logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
}
REGRESSORS = {
    "random-forest": lambda: RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0),
    "gradient-boosting": lambda: GradientBoostingRegressor(n_estimators=10, random_state=0),
    "linear": LinearRegression,
    "scaled-ridge": lambda: make_pipeline(StandardScaler(), Ridge()),
}


def assert_compiled(runtime: Any, report: Any, X: np.ndarray, native: Any) -> None:
    assert report.compiled, report.reason
    assert runtime.name == report.runtime == "onnxruntime"
    if isinstance(runtime, SplitRuntime):  # large batches may go to the native engine (test_runtimes_split)
        assert report.batch_runtime == runtime.large.name == native.name
        runtime = runtime.small
    assert isinstance(runtime, OnnxRuntime)
    assert report.max_abs_diff is not None
    assert report.tolerance == DEFAULT_TOLERANCE
    expected, actual = native.predict(X), runtime.predict(X)
    assert_array_equal(
        actual.values if expected.probabilities is not None else actual.values, expected.values
    )
    options = runtime.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_sklearn_classifiers_compile(kind: str, multiclass: Any) -> None:
    X, y = multiclass
    model = CLASSIFIERS[kind]().fit(X, ANIMALS[y])
    description = describe(Framework.SKLEARN, ("dog", "emu", "cat"))
    runtime, report = build_runtime(model, description, sample=X)
    assert_compiled(runtime, report, X, native_runtime(model, description))
    assert report.max_abs_diff <= DEFAULT_TOLERANCE  # type: ignore[operator]
    result = runtime.predict(X)
    assert result.values.tolist() == model.predict(X).tolist()
    assert_allclose(result.probabilities, model.predict_proba(X)[:, [1, 2, 0]], atol=DEFAULT_TOLERANCE)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(REGRESSORS))
def test_sklearn_regressors_compile(kind: str, regression: Any) -> None:
    X, y = regression
    model = REGRESSORS[kind]().fit(X, y)
    runtime, report = build_runtime(model, describe(Framework.SKLEARN), sample=X)
    assert report.compiled, report.reason
    scale = max(1.0, float(np.abs(model.predict(X)).max()))
    assert report.max_abs_diff <= DEFAULT_TOLERANCE * scale  # type: ignore[operator]
    assert_allclose(runtime.predict(X).values, model.predict(X), rtol=0, atol=DEFAULT_TOLERANCE * scale)


def test_classifier_without_probabilities_compiles_on_labels(binary: Any) -> None:
    X, y = binary
    model = RidgeClassifier().fit(X, y)
    runtime, report = build_runtime(model, describe(Framework.SKLEARN, (0, 1)), sample=X)
    assert report.compiled, report.reason
    assert report.max_abs_diff is None
    result = runtime.predict(X)
    assert result.probabilities is None
    assert_array_equal(result.values, model.predict(X))


@pytest.mark.parametrize("dataset", ["binary", "multiclass"])
def test_xgboost_classifiers_compile(dataset: str, request: pytest.FixtureRequest) -> None:
    X, y = request.getfixturevalue(dataset)
    model = xgboost.XGBClassifier(n_estimators=15, max_depth=3).fit(X, y)
    description = describe(Framework.XGBOOST, tuple(ANIMALS[: len(np.unique(y))]))
    runtime, report = build_runtime(model, description)
    assert_compiled(runtime, report, X, native_runtime(model, description))
    assert report.max_abs_diff <= DEFAULT_TOLERANCE  # type: ignore[operator]
    assert_array_equal(runtime.predict(X).values, ANIMALS[model.predict(X)])


def test_xgboost_early_stopping_compiles_only_the_trees_it_predicts_with(binary: Any) -> None:
    X, y = binary
    model = xgboost.XGBClassifier(n_estimators=200, learning_rate=0.5, early_stopping_rounds=2)
    model.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])], verbose=False)
    assert model.best_iteration + 1 < 200
    description = describe(Framework.XGBOOST, (0, 1))
    runtime, report = build_runtime(model, description, sample=X)
    assert_compiled(runtime, report, X, native_runtime(model, description))
    assert_allclose(runtime.predict(X).probabilities, model.predict_proba(X), atol=DEFAULT_TOLERANCE)  # type: ignore[arg-type]


@pytest.mark.parametrize("dataset", ["binary", "multiclass"])
def test_lightgbm_classifiers_compile(dataset: str, request: pytest.FixtureRequest) -> None:
    X, y = request.getfixturevalue(dataset)
    model = lightgbm.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(X, y)
    description = describe(Framework.LIGHTGBM, tuple(ANIMALS[: len(np.unique(y))]))
    runtime, report = build_runtime(model, description, sample=X)
    assert_compiled(runtime, report, X, native_runtime(model, description))
    assert_array_equal(runtime.predict(X).values, ANIMALS[model.predict(X)])
    # The converter's fixed-size label output is freed, so batches match the declared shape.
    compiled = runtime.small if isinstance(runtime, SplitRuntime) else runtime
    assert isinstance(compiled, OnnxRuntime)
    assert not isinstance(compiled.session.get_outputs()[0].shape[0], int)


def test_booster_regressors_compile(regression: Any) -> None:
    X, y = regression
    models: list[tuple[Any, Framework]] = [
        (xgboost.XGBRegressor(n_estimators=15, max_depth=3).fit(X, y), Framework.XGBOOST),
        (lightgbm.LGBMRegressor(n_estimators=15, num_leaves=7, verbose=-1).fit(X, y), Framework.LIGHTGBM),
    ]
    for model, framework in models:
        runtime, report = build_runtime(model, describe(framework), sample=X)
        assert report.compiled, report.reason
        scale = max(1.0, float(np.abs(model.predict(X)).max()))
        assert_allclose(runtime.predict(X).values, model.predict(X), rtol=0, atol=DEFAULT_TOLERANCE * scale)


def test_models_outside_the_compiler_fall_back_with_a_reason(binary: Any) -> None:
    X, y = binary
    for model in (KNeighborsClassifier().fit(X, y), SVC(kernel=lambda a, b: a @ b.T).fit(X, y)):
        runtime, report = build_runtime(model, describe(Framework.SKLEARN, (0, 1)))
        assert (runtime.name, report.runtime, report.compiled) == ("sklearn", "sklearn", False)
        assert type(model).__name__ in report.reason
        assert report.max_abs_diff is None
        assert_array_equal(runtime.predict(X).values, model.predict(X))


def test_conversion_failure_falls_back_with_the_error(binary: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = binary

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("converter exploded\nwith details")

    monkeypatch.setattr(compile_module, "convert_sklearn", broken)
    runtime, report = build_runtime(LogisticRegression().fit(X, y), describe(Framework.SKLEARN, (0, 1)))
    assert not report.compiled
    assert runtime.name == "sklearn"
    assert report.reason == "conversion to ONNX failed: RuntimeError: converter exploded"


def test_zero_tolerance_rejects_float32_differences(multiclass: Any) -> None:
    X, y = multiclass
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    runtime, report = build_runtime(model, describe(Framework.SKLEARN, (0, 1, 2)), sample=X, tolerance=0.0)
    assert (runtime.name, report.compiled, report.tolerance) == ("sklearn", False, 0.0)
    assert report.max_abs_diff is not None and report.max_abs_diff > 0
    assert report.reason.startswith("ONNX rejected on 300 sample rows")


def test_sample_beyond_float32_rejects_a_linear_model(binary: Any) -> None:
    X, y = binary
    model = LogisticRegression().fit(X, y)
    runtime, report = build_runtime(model, describe(Framework.SKLEARN, (0, 1)), sample=X * 1e300)
    assert runtime.name == "sklearn"
    assert not report.compiled
    assert report.reason.startswith("ONNX rejected on 300 sample rows; probabilities are NaN")


def test_compare_reports_label_disagreements(binary: Any) -> None:
    X, y = binary
    description = describe(Framework.SKLEARN, (0, 1))
    native = native_runtime(LogisticRegression().fit(X, y), description)
    other = native_runtime(LogisticRegression().fit(X, 1 - y), description)
    accepted, diff, reason = compare(native, other, X, tolerance=1.0)
    assert not accepted
    assert diff is not None and diff > 0
    assert reason.startswith(f"labels differ on {len(X)} of {len(X)} rows")


def test_compilation_can_be_disabled_and_onnx_is_never_recompiled(regression: Any) -> None:
    X, y = regression
    model = Ridge().fit(X, y)
    runtime, report = build_runtime(model, describe(Framework.SKLEARN), compile=False)
    assert (runtime.name, report.compiled, report.reason) == ("sklearn", False, "compilation disabled")
    proto = convert_sklearn(model, initial_types=[("x", FloatTensorType([None, N_FEATURES]))])
    runtime, report = build_runtime(proto, describe(Framework.ONNX))
    assert (runtime.name, report.compiled) == ("onnxruntime", False)
    assert report.reason == "onnx models are served by their own runtime"


def test_sample_must_match_the_signature(regression: Any) -> None:
    X, y = regression
    with pytest.raises(ValueError, match="5 columns"):
        build_runtime(Ridge().fit(X, y), describe(Framework.SKLEARN), sample=X[:, :3])
