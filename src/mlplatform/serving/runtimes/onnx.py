"""ONNX models, uploaded or compiled from tree ensembles and linear models, served by ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from mlplatform.formats.base import ModelDescription
from mlplatform.serving.runtimes.base import (
    ClassOrder,
    RawPrediction,
    Runtime,
    feature_count,
    task_is_classification,
)

_INPUT_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_FLOAT_OUTPUTS = frozenset({"tensor(float)", "tensor(double)"})


def session_options(threads: int = 1) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning pool threads would compete with the event loop for the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Converters declare some output shapes too narrowly; ORT would log a warning on every call.
    options.log_severity_level = 3
    return options


class OnnxRuntime(Runtime):
    """One `InferenceSession` on the CPU provider.

    Inputs: one 2-D tensor, or one single-column tensor per feature (matched by name, else by position).
    Classifiers: a label output (rank 1) and/or a probability output (rank 2, or ZipMap's list of dicts);
    `order` says which labels the model's probability columns and label values stand for (by default
    `description.classes`). With `probabilities=False` a second output is ignored (it holds scores).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: onnx.ModelProto | bytes,
        description: ModelDescription,
        *,
        order: ClassOrder | None = None,
        probabilities: bool = True,
        threads: int = 1,
    ) -> None:
        data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
        self.session = ort.InferenceSession(
            data, session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.description = description
        inputs = self.session.get_inputs()
        width = _width(inputs)
        self.n_features = feature_count(description, width)
        if width is not None and width != self.n_features:
            raise ValueError(
                f"the ONNX model takes {width} features, the description lists {self.n_features}"
            )
        self._inputs = _input_columns(inputs, description, self.n_features)
        self._order: ClassOrder | None = None
        self._label_output: int | None = None
        self._proba_output: int | None = None
        if task_is_classification(description):
            if order is None:
                if description.classes is None:
                    raise ValueError("an ONNX classifier needs description.classes")
                order = ClassOrder(description.classes, description)
            self._order = order
            self._find_outputs(self.session.get_outputs(), probabilities)

    def predict(self, X: np.ndarray) -> RawPrediction:
        outputs = self.session.run(None, self._feed(X))
        if self._order is None:
            values = np.asarray(outputs[0])
            return RawPrediction(
                values=values.reshape(-1) if values.ndim == 2 and values.shape[1] == 1 else values
            )
        proba = None
        if self._proba_output is not None:
            proba = self._order.probabilities(_probabilities(outputs[self._proba_output], self._order))
        if self._label_output is not None:
            labels = self._order.labels_from_model(np.asarray(outputs[self._label_output]).reshape(-1))
        else:
            labels = self._order.labels_from_probabilities(proba)  # type: ignore[arg-type]
        return RawPrediction(labels, proba)

    def _feed(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: np.ascontiguousarray(X if columns is None else X[:, columns], dtype=dtype)
            for name, columns, dtype in self._inputs
        }

    def _find_outputs(self, outputs: list[Any], probabilities: bool) -> None:
        for index, output in enumerate(outputs):
            rank = len(output.shape) if isinstance(output.shape, list) else 0
            zipmap = output.type.startswith("seq(map(")
            if self._proba_output is None and (zipmap or (output.type in _FLOAT_OUTPUTS and rank == 2)):
                self._proba_output = index
            elif self._label_output is None and output.type.startswith("tensor(") and rank <= 1:
                self._label_output = index
        if not probabilities:
            self._proba_output = None
        if self._proba_output is None and self._label_output is None:
            raise ValueError("the ONNX classifier has neither a label nor a probability output")


def _probabilities(output: Any, order: ClassOrder) -> np.ndarray:
    if isinstance(output, list):  # ZipMap: one {label: probability} per row
        keys = order.model_labels.tolist()
        return np.asarray([[row[key] for key in keys] for row in output])
    return np.asarray(output)


def _width(inputs: list[Any]) -> int | None:
    if len(inputs) > 1:
        return len(inputs)
    shape = inputs[0].shape
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None


def _input_columns(
    inputs: list[Any], description: ModelDescription, n_features: int
) -> list[tuple[str, np.ndarray | None, type[np.generic]]]:
    dtypes = []
    for item in inputs:
        if item.type not in _INPUT_TYPES:
            raise ValueError(f"ONNX input {item.name!r} has unsupported type {item.type}")
        dtypes.append(_INPUT_TYPES[item.type])
    if len(inputs) == 1:
        return [(inputs[0].name, None, dtypes[0])]
    names = [feature.name for feature in description.features]
    if all(item.name in names for item in inputs):
        positions = [names.index(item.name) for item in inputs]
    elif len(inputs) == n_features:
        positions = list(range(n_features))
    else:
        raise ValueError(f"the ONNX model has {len(inputs)} inputs for {n_features} features")
    return [
        (item.name, np.asarray([p]), dtype) for item, p, dtype in zip(inputs, positions, dtypes, strict=True)
    ]
