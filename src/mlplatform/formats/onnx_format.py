"""ONNX models: one self-contained protobuf (no external data), accepted by the checker and by onnxruntime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlplatform.formats.base import (
    ArtifactFormat,
    FeatureType,
    Framework,
    InvalidArtifactError,
    Task,
    UnsafeArtifactError,
)
from mlplatform.formats.describe import Label, ModelFacts, reason

FILE_NAME = "model.onnx"
ML_DOMAIN = "ai.onnx.ml"
_CLASSIFIER_OPS = {"TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier", "ZipMap"}
_REGRESSOR_OPS = {"TreeEnsembleRegressor", "LinearRegressor", "SVMRegressor"}
_INT, _STRING, _BOOL = (2, 3, 4, 5, 6, 7, 12, 13), (8,), (9,)  # TensorProto.DataType codes


def load_onnx(path: Path) -> Any:
    """The onnx.ModelProto, refusing external data and anything the checker rejects."""
    import onnx

    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidArtifactError(
            f"The file is not a valid ONNX model ({reason(exc)}); export it again."
        ) from exc
    if not model.graph.node or not model.opset_import:
        raise InvalidArtifactError(
            "The file parses as protobuf but is not an ONNX model (no graph or opset)."
        )
    _refuse_external_data(model, onnx)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, RecursionError) as exc:
        raise InvalidArtifactError(
            f"The ONNX model fails the ONNX checker ({reason(exc)}); export it again."
        ) from exc
    return model


def _refuse_external_data(model: Any, onnx: Any) -> None:
    try:
        external = [
            tensor.name or "(unnamed)"
            for tensor in _all_tensors(model)
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0
        ]
    except RecursionError as exc:
        raise InvalidArtifactError("The ONNX model nests subgraphs too deeply; export it again.") from exc
    if external:
        raise UnsafeArtifactError(
            f"The ONNX model keeps tensors in external files ({', '.join(external[:5])}), which the server "
            "will not read; save it as one file with onnx.save_model(model, path, "
            "save_as_external_data=False)."
        )


def _all_tensors(model: Any) -> Iterator[Any]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
        for tensor in [*sparse, *attribute.sparse_tensors]:
            yield from (tensor.values, tensor.indices)
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def inspect_onnx(path: Path) -> ModelFacts:
    import onnx
    import onnxruntime

    model = load_onnx(path)
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise InvalidArtifactError(
            f"onnxruntime cannot run the ONNX model ({reason(exc)}); export it with opsets it supports."
        ) from exc
    task = _task({node.op_type for node in model.graph.node if node.domain == ML_DOMAIN})
    n_features, names, types = _inputs(model)
    outputs = list(model.graph.output)
    return ModelFacts(
        framework=Framework.ONNX,
        format=ArtifactFormat.ONNX,
        flavour=f"onnx.ModelProto[{model.producer_name or 'unknown'}]",
        library_version=onnx.__version__,
        file_name=FILE_NAME,
        task=task,
        n_features=n_features,
        feature_names=names,
        feature_types=types,
        classes=_classes(model) if task is not Task.REGRESSION else None,
        probabilities=task is Task.CLASSIFICATION and len(outputs) > 1,
        prediction_type=_type_name(outputs[0].type.tensor_type.elem_type) if outputs else None,
    )


def _task(ml_ops: set[str]) -> Task | None:
    """Classifier and regressor operators tell; a plain tensor graph does not (the metadata must)."""
    if ml_ops & _CLASSIFIER_OPS:
        return Task.CLASSIFICATION
    return Task.REGRESSION if ml_ops & _REGRESSOR_OPS else None


def _inputs(model: Any) -> tuple[int | None, list[str] | None, list[FeatureType] | None]:
    """Feature count, names (when every input is one column) and types; columns follow the inputs' order."""
    constants = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in constants]
    widths: list[int | None] = []
    for value in inputs:
        if not value.type.HasField("tensor_type"):
            raise InvalidArtifactError(
                f"The ONNX input {value.name!r} is not a tensor; only tabular models are accepted."
            )
        dims = value.type.tensor_type.shape.dim
        if len(dims) not in (1, 2):
            raise InvalidArtifactError(
                f"The ONNX input {value.name!r} has {len(dims)} dimensions; only tabular models (a batch of "
                "rows, one column per feature) are accepted."
            )
        widths.append(1 if len(dims) == 1 else dims[1].dim_value or None)
    if not inputs:
        raise InvalidArtifactError("The ONNX model has no inputs; export it with its feature inputs.")
    if None in widths:
        if len(inputs) > 1:
            raise InvalidArtifactError(
                "The ONNX model has several inputs and one of unknown width; export it with fixed input "
                "widths."
            )
        return None, None, None
    known = [width for width in widths if width is not None]
    types = [
        _feature_type(value.type.tensor_type.elem_type)
        for value, width in zip(inputs, known, strict=True)
        for _ in range(width)
    ]
    names = (
        [value.name for value in inputs] if all(width == 1 for width in known) and len(inputs) > 1 else None
    )
    return sum(known), names, types


def _classes(model: Any) -> list[Label] | None:
    import onnx

    nodes = sorted(
        (node for node in model.graph.node if node.domain == ML_DOMAIN and node.op_type in _CLASSIFIER_OPS),
        key=lambda node: node.op_type != "ZipMap",
    )
    for node in nodes:
        for attribute in node.attribute:
            if attribute.name in ("classlabels_int64s", "classlabels_ints"):
                return [int(value) for value in onnx.helper.get_attribute_value(attribute)]
            if attribute.name == "classlabels_strings":
                return [value.decode("utf-8") for value in onnx.helper.get_attribute_value(attribute)]
    return None


def _feature_type(elem_type: int) -> FeatureType:
    if elem_type in _INT:
        return FeatureType.INT
    if elem_type in _STRING:
        return FeatureType.STRING
    if elem_type in _BOOL:
        return FeatureType.BOOL
    return FeatureType.FLOAT


def _type_name(elem_type: int) -> str:
    return {FeatureType.INT: "int", FeatureType.STRING: "string", FeatureType.BOOL: "bool"}.get(
        _feature_type(elem_type), "float"
    )
