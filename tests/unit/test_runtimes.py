"""Native runtimes: the library's own predictions, real class labels, description column order, one thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightgbm
import numpy as np
import onnxruntime as ort
import pandas as pd  # type: ignore[import-untyped]
import pytest
import xgboost
from numpy.testing import assert_allclose, assert_array_equal
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info

from mlplatform.formats.base import ArtifactFormat, Feature, Framework, ModelDescription, Task
from mlplatform.serving.runtimes import CompileReport, RawPrediction, Runtime, native_runtime
from mlplatform.serving.runtimes.base import synthetic_sample
from mlplatform.serving.runtimes.lightgbm import LightGBMRuntime
from mlplatform.serving.runtimes.onnx import OnnxRuntime
from mlplatform.serving.runtimes.sklearn import SklearnRuntime

N_FEATURES = 6
ANIMALS = np.array(["cat", "dog", "emu"])


def describe(
    framework: Framework, classes: tuple[Any, ...] | None = None, names: list[str] | None = None
) -> ModelDescription:
    names = names or [f"x{i}" for i in range(N_FEATURES)]
    return ModelDescription(
        framework=framework,
        format=ArtifactFormat.PICKLE,
        flavour="test",
        task=Task.CLASSIFICATION if classes is not None else Task.REGRESSION,
        features=tuple(Feature(name) for name in names),
        classes=classes,
    )


@pytest.fixture(scope="module")
def binary() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(400, N_FEATURES, n_informative=4, random_state=1)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def multiclass() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(  # type: ignore[no-any-return]
        450, N_FEATURES, n_informative=4, n_classes=3, random_state=2
    )


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(400, N_FEATURES, noise=3.0, random_state=3)
    return X, y * 50 + 1000


# sklearn


def test_sklearn_classifier_gives_string_labels_and_its_own_probabilities(multiclass: Any) -> None:
    X, y = multiclass
    model = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(X, ANIMALS[y])
    runtime = native_runtime(model, describe(Framework.SKLEARN, ("cat", "dog", "emu")))
    result = runtime.predict(X)
    assert runtime.name == "sklearn"
    assert_array_equal(result.values, model.predict(X))
    assert result.values.dtype.kind == "U"
    assert result.probabilities is not None
    assert_allclose(result.probabilities, model.predict_proba(X), rtol=0, atol=0)


def test_probability_columns_follow_description_classes(multiclass: Any) -> None:
    X, y = multiclass
    model = LogisticRegression(max_iter=500).fit(X, ANIMALS[y])
    result = native_runtime(model, describe(Framework.SKLEARN, ("emu", "cat", "dog"))).predict(X)
    own = model.predict_proba(X)
    assert result.probabilities is not None
    assert_allclose(result.probabilities, own[:, [2, 0, 1]])
    assert_array_equal(result.values, model.predict(X))


def test_forest_direct_path_is_bit_identical_and_one_job(binary: Any) -> None:
    X, y = binary
    model = RandomForestClassifier(n_estimators=10, max_depth=4, n_jobs=2, random_state=0).fit(X, y)
    runtime = native_runtime(model, describe(Framework.SKLEARN, (0, 1)))
    assert isinstance(runtime, SklearnRuntime)
    assert runtime.direct_tree_path
    assert model.n_jobs == 1
    result = runtime.predict(X)
    assert_array_equal(result.probabilities, model.predict_proba(X))
    assert_array_equal(result.values, model.predict(X))


def test_sklearn_regressors(regression: Any) -> None:
    X, y = regression
    for model in (Ridge().fit(X, y), ExtraTreesRegressor(n_estimators=8, random_state=0).fit(X, y)):
        result = native_runtime(model, describe(Framework.SKLEARN)).predict(X)
        assert result.probabilities is None
        assert_allclose(result.values, model.predict(X), rtol=1e-12)


def test_sklearn_pipeline_with_string_labels(binary: Any) -> None:
    X, y = binary
    labels = np.array(["no", "yes"])[y]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, labels)
    result = native_runtime(model, describe(Framework.SKLEARN, ("no", "yes"))).predict(X)
    assert_array_equal(result.values, model.predict(X))
    assert_allclose(result.probabilities, model.predict_proba(X))  # type: ignore[arg-type]


def test_classifiers_without_probabilities_or_with_their_own_predict(binary: Any) -> None:
    X, y = binary
    ridge = RidgeClassifier().fit(X, y)
    result = native_runtime(ridge, describe(Framework.SKLEARN, (0, 1))).predict(X)
    assert result.probabilities is None
    assert_array_equal(result.values, ridge.predict(X))
    # Outside the known argmax-of-probabilities estimators both predict and predict_proba are called.
    knn = KNeighborsClassifier(n_neighbors=4).fit(X, y)
    result = native_runtime(knn, describe(Framework.SKLEARN, (0, 1))).predict(X)
    assert_array_equal(result.values, knn.predict(X))
    assert_allclose(result.probabilities, knn.predict_proba(X))  # type: ignore[arg-type]


def test_model_fitted_on_a_dataframe_gets_columns_by_name_without_warnings(binary: Any) -> None:
    X, y = binary
    fitted_names = [f"x{i}" for i in range(N_FEATURES)]
    model = LogisticRegression().fit(pd.DataFrame(X, columns=fitted_names), y)
    declared = list(reversed(fitted_names))  # the signature lists the same features in another order
    runtime = native_runtime(model, describe(Framework.SKLEARN, (0, 1), names=declared))
    result = runtime.predict(X[:, ::-1])
    expected = model.predict_proba(pd.DataFrame(X, columns=fitted_names))
    assert_allclose(result.probabilities, expected)  # type: ignore[arg-type]


def test_sklearn_pins_openmp_to_one_thread_in_each_predicting_thread(binary: Any) -> None:
    X, y = binary
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    runtime = native_runtime(model, describe(Framework.SKLEARN, (0, 1)))
    seen: list[int] = []

    def predict_then_look() -> None:
        runtime.predict(X[:1])
        seen.extend(info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp")

    worker = threading.Thread(target=predict_then_look)
    worker.start()
    worker.join()
    assert seen and set(seen) == {1}


def test_description_classes_must_match_the_model(binary: Any) -> None:
    X, y = binary
    model = LogisticRegression().fit(X, np.array(["no", "yes"])[y])
    with pytest.raises(ValueError, match="do not match"):
        native_runtime(model, describe(Framework.SKLEARN, ("yes", "maybe")))


# XGBoost


@pytest.mark.parametrize("dataset", ["binary", "multiclass"])
def test_xgboost_classifier(dataset: str, request: pytest.FixtureRequest) -> None:
    X, y = request.getfixturevalue(dataset)
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=2).fit(X, y)
    classes = tuple(ANIMALS[: len(np.unique(y))])
    runtime = native_runtime(model, describe(Framework.XGBOOST, classes))
    result = runtime.predict(X)
    assert_allclose(result.probabilities, model.predict_proba(X), rtol=1e-6)  # type: ignore[arg-type]
    assert_array_equal(result.values, ANIMALS[model.predict(X)])
    config = json.loads(model.get_booster().save_config())
    assert config["learner"]["generic_param"]["nthread"] == "1"


def test_xgboost_raw_booster_regressor_and_softmax(regression: Any, multiclass: Any) -> None:
    X, y = regression
    booster = xgboost.train({"objective": "reg:squarederror"}, xgboost.DMatrix(X, label=y), 10)
    result = native_runtime(booster, describe(Framework.XGBOOST)).predict(X)
    assert_allclose(result.values, booster.predict(xgboost.DMatrix(X)), rtol=1e-6)
    Xm, ym = multiclass
    params = {"objective": "multi:softmax", "num_class": 3}
    softmax = xgboost.train(params, xgboost.DMatrix(Xm, label=ym), 10)
    result = native_runtime(softmax, describe(Framework.XGBOOST, ("cat", "dog", "emu"))).predict(Xm)
    assert_array_equal(result.values, ANIMALS[softmax.predict(xgboost.DMatrix(Xm)).astype(int)])
    assert result.probabilities is not None
    assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-6)


# LightGBM


def _record_threads(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    assert isinstance(runtime, LightGBMRuntime)
    booster = runtime.booster
    original: Callable[..., Any] = booster.predict

    def predict(data: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("num_threads"))
        return original(data, **kwargs)

    monkeypatch.setattr(booster, "predict", predict)
    return seen


@pytest.mark.parametrize("dataset", ["binary", "multiclass"])
def test_lightgbm_classifier(
    dataset: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = request.getfixturevalue(dataset)
    model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, y)
    classes = tuple(ANIMALS[: len(np.unique(y))])
    runtime = native_runtime(model, describe(Framework.LIGHTGBM, classes))
    threads = _record_threads(runtime, monkeypatch)
    result = runtime.predict(X)
    assert threads == [1]
    assert_allclose(result.probabilities, model.predict_proba(X), rtol=1e-12)  # type: ignore[arg-type]
    assert_array_equal(result.values, ANIMALS[model.predict(X)])


def test_lightgbm_regressor(regression: Any) -> None:
    X, y = regression
    model = lightgbm.LGBMRegressor(n_estimators=10, num_leaves=7, verbose=-1).fit(X, y)
    result = native_runtime(model.booster_, describe(Framework.LIGHTGBM)).predict(X)
    assert result.probabilities is None
    assert_allclose(result.values, model.predict(X), rtol=1e-12)


# ONNX


@pytest.mark.parametrize("zipmap", [False, True])
def test_onnx_model_from_skl2onnx(zipmap: bool, multiclass: Any) -> None:
    X, y = multiclass
    model = LogisticRegression(max_iter=500).fit(X, ANIMALS[y])
    proto = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        options={id(model): {"zipmap": zipmap}},
    )
    runtime = native_runtime(proto, describe(Framework.ONNX, ("cat", "dog", "emu")))
    result = runtime.predict(X)
    assert runtime.name == "onnxruntime"
    assert_array_equal(result.values, model.predict(X))
    assert_allclose(result.probabilities, model.predict_proba(X), atol=1e-5)  # type: ignore[arg-type]
    assert result.values.dtype.kind in "OU"


def test_onnx_session_is_pinned_to_one_thread(regression: Any) -> None:
    X, y = regression
    proto = convert_sklearn(Ridge().fit(X, y), initial_types=[("x", FloatTensorType([None, N_FEATURES]))])
    runtime = native_runtime(proto.SerializeToString(), describe(Framework.ONNX))
    assert isinstance(runtime, OnnxRuntime)
    options = runtime.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runtime.predict(X).values.shape == (len(X),)


# shapes, warm-up, reports


@pytest.fixture(scope="module")
def runtimes(multiclass: Any, regression: Any) -> list[tuple[Runtime, int | None]]:
    X, y = multiclass
    Xr, yr = regression
    classes = ("cat", "dog", "emu")
    return [
        (
            native_runtime(
                RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y),
                describe(Framework.SKLEARN, (0, 1, 2)),
            ),
            3,
        ),
        (native_runtime(Ridge().fit(Xr, yr), describe(Framework.SKLEARN)), None),
        (
            native_runtime(
                xgboost.XGBClassifier(n_estimators=5).fit(X, y), describe(Framework.XGBOOST, classes)
            ),
            3,
        ),
        (native_runtime(xgboost.XGBRegressor(n_estimators=5).fit(Xr, yr), describe(Framework.XGBOOST)), None),
        (
            native_runtime(
                lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y),
                describe(Framework.LIGHTGBM, classes),
            ),
            3,
        ),
        (native_runtime(_to_onnx(LogisticRegression().fit(X, y)), describe(Framework.ONNX, (0, 1, 2))), 3),
        (native_runtime(LogisticRegression().fit(X, y), describe(Framework.SKLEARN, (0, 1, 2))), 3),
    ]


def _to_onnx(model: Any) -> Any:
    initial_types = [("x", FloatTensorType([None, N_FEATURES]))]
    return convert_sklearn(model, initial_types=initial_types, options={id(model): {"zipmap": False}})


def test_concurrent_predictions_match_sequential_ones(runtimes: list[tuple[Runtime, int | None]]) -> None:
    X = synthetic_sample(N_FEATURES, 240)
    chunks = [X[i : i + 1] if i % 2 else X[i : i + 24] for i in range(0, 240, 12)] * 5
    for runtime, _ in runtimes:
        expected = [runtime.predict(chunk) for chunk in chunks]
        with ThreadPoolExecutor(max_workers=4) as pool:
            actual = list(pool.map(runtime.predict, chunks))
        for want, got in zip(expected, actual, strict=True):
            assert_array_equal(got.values, want.values)
            assert_array_equal(got.probabilities, want.probabilities)


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_single_row_and_batch_shapes(rows: int, runtimes: list[tuple[Runtime, int | None]]) -> None:
    X = synthetic_sample(N_FEATURES, rows)
    for runtime, n_classes in runtimes:
        result = runtime.predict(X)
        assert isinstance(result, RawPrediction)
        assert result.values.shape == (rows,), runtime.name
        if n_classes is None:
            assert result.probabilities is None
        else:
            assert result.probabilities is not None
            assert result.probabilities.shape == (rows, n_classes)
        runtime.warm_up()


def test_synthetic_sample_is_deterministic() -> None:
    first, second = synthetic_sample(4), synthetic_sample(4)
    assert first.shape == (300, 4)
    assert_array_equal(first, second)


def test_compile_report_is_json() -> None:
    report = CompileReport("onnxruntime", True, 1.5e-7, 1e-5, "matches")
    assert json.loads(json.dumps(report.to_dict())) == {
        "runtime": "onnxruntime",
        "compiled": True,
        "max_abs_diff": 1.5e-7,
        "tolerance": 1e-5,
        "reason": "matches",
        "batch_runtime": None,
        "batch_threshold": None,
        "microseconds_per_row": None,
    }
