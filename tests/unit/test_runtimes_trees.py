"""scikit-learn trees and forests built as one ONNX tree-ensemble node from their arrays (runtimes/trees.py):
the same branch as scikit-learn for every float32 row, thresholds and missing values included."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)

from mlplatform.formats.base import ArtifactFormat, Feature, Framework, ModelDescription, Task
from mlplatform.serving.runtimes import build_runtime
from mlplatform.serving.runtimes import compile as compile_module
from mlplatform.serving.runtimes.base import ClassOrder
from mlplatform.serving.runtimes.onnx import OnnxRuntime
from mlplatform.serving.runtimes.split import SplitRuntime
from mlplatform.serving.runtimes.trees import builds, forest_to_onnx

FEATURES = 6
# Probabilities are rounded once, to float32, at the end: half an ulp of a value ≤ 1 is below 6e-8.
FLOAT32_ROUNDING = 6e-8

CLASSIFIERS = {
    "random-forest": lambda: RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0),
    "balanced-forest": lambda: RandomForestClassifier(
        n_estimators=20, max_depth=8, class_weight="balanced", random_state=0
    ),
    "extra-trees": lambda: ExtraTreesClassifier(n_estimators=20, max_depth=8, random_state=0),
    "decision-tree": lambda: DecisionTreeClassifier(random_state=0),
    "extra-tree": lambda: ExtraTreeClassifier(random_state=0),
}
REGRESSORS = {
    "random-forest": lambda: RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0),
    "extra-trees": lambda: ExtraTreesRegressor(n_estimators=20, random_state=0),
    "decision-tree": lambda: DecisionTreeRegressor(random_state=0),
    "extra-tree": lambda: ExtraTreeRegressor(random_state=0),
}


def session(model: Any) -> ort.InferenceSession:
    proto = forest_to_onnx(model, FEATURES, "input")
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(model: Any, X: np.ndarray) -> np.ndarray:
    (output,) = session(model).run(None, {"input": np.asarray(X, dtype=np.float32)})
    return np.asarray(output)


def classification(classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        600, FEATURES, n_informative=4, n_classes=classes, n_clusters_per_class=1, random_state=seed
    )
    return X, np.array(["ant", "bee", "cat", "dog"])[y]


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_classifiers_give_scikit_learns_probabilities(kind: str, classes: int) -> None:
    X, y = classification(classes, seed=classes)
    model = CLASSIFIERS[kind]().fit(X[:400], y[:400])
    proba = run(model, X)
    assert proba.shape == (len(X), classes)
    assert_allclose(proba, model.predict_proba(X), rtol=0, atol=FLOAT32_ROUNDING)
    assert_array_equal(model.classes_[np.argmax(proba, axis=1)], model.predict(X))


@pytest.mark.parametrize("kind", sorted(REGRESSORS))
def test_regressors_give_scikit_learns_values(kind: str) -> None:
    X, y = make_regression(600, FEATURES, noise=3.0, random_state=1)
    model = REGRESSORS[kind]().fit(X[:400], y[:400] * 50 + 1000)
    values = run(model, X)
    assert values.shape == (len(X), 1)
    # the mean is taken in float64 and rounded to float32 once
    assert_array_equal(values[:, 0], model.predict(X).astype(np.float32))


def test_rows_on_either_side_of_every_threshold_take_scikit_learns_branch() -> None:
    """scikit-learn compares float32(x) with a float64 threshold; a converter that rounds the threshold to
    float32 sends x = float32(threshold) the wrong way whenever the rounding went up."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2_000, FEATURES)) * rng.choice([1e-3, 1.0, 1e4], size=(2_000, FEATURES))
    y = rng.normal(size=2_000)
    tree = DecisionTreeRegressor(random_state=0).fit(X, y)  # grown to pure leaves: distinct leaf values
    inner = tree.tree_.children_left != -1
    features, thresholds = tree.tree_.feature[inner], tree.tree_.threshold[inner]
    rounded = thresholds.astype(np.float32)
    assert (rounded.astype(np.float64) > thresholds).any()  # the case that matters occurs in this tree
    rows = np.repeat(X[:1].astype(np.float32), 3 * len(thresholds), axis=0)
    below, above = np.nextafter(rounded, np.float32(-np.inf)), np.nextafter(rounded, np.float32(np.inf))
    for i, (feature, values) in enumerate(zip(features, np.stack([below, rounded, above], 1), strict=True)):
        rows[3 * i : 3 * i + 3, feature] = values
    assert_array_equal(run(tree, rows)[:, 0], tree.predict(rows).astype(np.float32))


def test_missing_values_follow_scikit_learns_side() -> None:
    X, y = classification(3, seed=7)
    X_nan = X.copy()
    X_nan[np.random.default_rng(0).random(X.shape) < 0.15] = np.nan
    trained_with = RandomForestClassifier(n_estimators=15, random_state=0).fit(X_nan[:400], y[:400])
    trained_without = DecisionTreeClassifier(random_state=0).fit(X[:400], y[:400])
    for model in (trained_with, trained_without):
        assert_allclose(run(model, X_nan), model.predict_proba(X_nan), rtol=0, atol=FLOAT32_ROUNDING)


def test_only_single_output_trees_and_forests_are_built_here() -> None:
    X, y = make_regression(100, FEATURES, n_targets=2, random_state=0)
    assert builds(RandomForestRegressor(n_estimators=2).fit(X, y[:, 0]))
    assert not builds(RandomForestRegressor(n_estimators=2).fit(X, y))  # two outputs
    assert not builds(RandomForestRegressor())  # not fitted
    with pytest.raises(ValueError, match="single-output"):
        forest_to_onnx(RandomForestRegressor(n_estimators=2).fit(X, y), FEATURES, "input")


def test_the_registry_compile_check_serves_a_forest_through_the_builder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("skl2onnx must not convert a forest")

    monkeypatch.setattr(compile_module, "convert_sklearn", not_called)
    X, y = classification(3, seed=11)
    model = RandomForestClassifier(n_estimators=30, max_depth=12, random_state=0).fit(X, y)
    description = ModelDescription(
        framework=Framework.SKLEARN,
        format=ArtifactFormat.SKOPS,
        flavour="test",
        task=Task.CLASSIFICATION,
        features=tuple(Feature(f"x{i}") for i in range(FEATURES)),
        classes=("cat", "ant", "bee"),
    )
    for sample in (X, None):  # the training rows, then the synthetic rows far outside them
        runtime, report = build_runtime(model, description, sample=sample)
        assert report.compiled, report.reason
        compiled = runtime.small if isinstance(runtime, SplitRuntime) else runtime
        assert isinstance(compiled, OnnxRuntime)
        result = compiled.predict(X)
        assert result.values.tolist() == model.predict(X).tolist()
        assert_allclose(result.probabilities, model.predict_proba(X)[:, [2, 0, 1]], atol=FLOAT32_ROUNDING)  # type: ignore[arg-type]


def test_a_tie_goes_to_the_class_the_model_lists_first_whatever_the_descriptions_order() -> None:
    description = ModelDescription(
        framework=Framework.SKLEARN,
        format=ArtifactFormat.SKOPS,
        flavour="test",
        task=Task.CLASSIFICATION,
        features=(Feature("x"),),
        classes=("cat", "ant", "bee"),
    )
    order = ClassOrder(["ant", "bee", "cat"], description)
    model_order = np.array([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    described = order.probabilities(model_order)  # columns cat, ant, bee
    assert_array_equal(described[0], [0.4, 0.2, 0.4])
    assert order.labels_from_probabilities(described).tolist() == ["bee", "ant", "cat"]
