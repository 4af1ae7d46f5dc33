"""Converting tree ensembles and linear models to ONNX (float32 inputs), served by the ONNX runtime."""

from __future__ import annotations

from typing import Any

import onnx
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as BoosterFloatTensorType
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.pipeline import Pipeline

from mlplatform.formats.base import ModelDescription
from mlplatform.serving.runtimes import lightgbm as lightgbm_runtime
from mlplatform.serving.runtimes import trees
from mlplatform.serving.runtimes import xgboost as xgboost_runtime
from mlplatform.serving.runtimes.base import (
    TREE_AVERAGES,
    ClassOrder,
    NotCompilable,
    task_is_classification,
)
from mlplatform.serving.runtimes.onnx import OnnxRuntime

SKLEARN_MODELS = TREE_AVERAGES | frozenset(
    {
        # boosted trees
        "GradientBoostingClassifier",
        "GradientBoostingRegressor",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
        # linear models
        "LogisticRegression",
        "LogisticRegressionCV",
        "SGDClassifier",
        "RidgeClassifier",
        "RidgeClassifierCV",
        "LinearSVC",
        "Perceptron",
        "LinearRegression",
        "Ridge",
        "RidgeCV",
        "Lasso",
        "LassoCV",
        "ElasticNet",
        "ElasticNetCV",
        "SGDRegressor",
        "LinearSVR",
        "HuberRegressor",
        "BayesianRidge",
    }
)
SKLEARN_STEPS = frozenset(
    {"StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer", "SimpleImputer"}
)
INPUT_NAME = "input"


def sklearn_to_onnx(model: Any, description: ModelDescription, n_features: int) -> OnnxRuntime:
    final = _compilable_estimator(model)
    classifier = task_is_classification(description)
    order = ClassOrder(model.classes_, description) if classifier else None
    if trees.builds(model):  # a bare tree or forest: built from its arrays, exact in float64 (trees.py)
        return OnnxRuntime(trees.forest_to_onnx(model, n_features, INPUT_NAME), description, order=order)
    options = {id(final): {"zipmap": False}} if classifier else None
    proto = convert_sklearn(
        model, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))], options=options
    )
    # Classifiers without predict_proba (RidgeClassifier, LinearSVC) put decision scores in the second output.
    return OnnxRuntime(proto, description, order=order, probabilities=hasattr(model, "predict_proba"))


def xgboost_to_onnx(model: Any, description: ModelDescription, n_features: int) -> OnnxRuntime:
    first, stop = xgboost_runtime.iteration_range(model)
    booster = xgboost_runtime.booster_of(model)
    booster = booster[first:stop] if stop else booster.copy()  # only the trees the native runtime uses
    booster.feature_names = None  # the converter only understands the default names f0, f1, ...
    proto = convert_xgboost(booster, initial_types=[(INPUT_NAME, BoosterFloatTensorType([None, n_features]))])
    objective, num_class = xgboost_runtime.objective_of(booster)
    return _booster_runtime(proto, description, num_class, probabilities=objective != "binary:hinge")


def lightgbm_to_onnx(model: Any, description: ModelDescription, n_features: int) -> OnnxRuntime:
    booster = lightgbm_runtime.booster_of(model)
    proto = convert_lightgbm(
        booster, initial_types=[(INPUT_NAME, BoosterFloatTensorType([None, n_features]))], zipmap=False
    )
    _, num_class = lightgbm_runtime.objective_of(booster)
    return _booster_runtime(_free_batch_dimension(proto), description, num_class, probabilities=True)


def _booster_runtime(
    proto: onnx.ModelProto, description: ModelDescription, num_class: int, *, probabilities: bool
) -> OnnxRuntime:
    order = None
    if task_is_classification(description):
        order = ClassOrder(range(max(num_class, 2)), description, positional=True)
    return OnnxRuntime(proto, description, order=order, probabilities=probabilities)


def _compilable_estimator(model: Any) -> Any:
    """The estimator whose outputs the ONNX graph ends in; raises NotCompilable for anything else."""
    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    final, transforms = steps[-1], [step for step in steps[:-1] if step not in (None, "passthrough")]
    if type(final).__name__ not in SKLEARN_MODELS:
        raise NotCompilable(
            f"{type(final).__name__} is not a tree ensemble or linear model the compiler knows"
        )
    for step in transforms:
        if type(step).__name__ not in SKLEARN_STEPS:
            raise NotCompilable(f"pipeline step {type(step).__name__} is not a scaler the compiler handles")
    return final


def _free_batch_dimension(proto: onnx.ModelProto) -> onnx.ModelProto:
    # onnxmltools declares LightGBM's label output as shape [1], which every batch of more rows violates.
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    return proto
