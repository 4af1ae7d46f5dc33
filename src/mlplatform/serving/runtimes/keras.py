"""Keras models (the optional tensorflow extra), called directly: far cheaper than `model.predict`."""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mlplatform.formats.base import ModelDescription
from mlplatform.serving.runtimes.base import (
    ClassOrder,
    RawPrediction,
    Runtime,
    binary_probabilities,
    feature_count,
    task_is_classification,
)


class KerasRuntime(Runtime):
    """For classifiers the last layer gives probabilities: one sigmoid unit, or a softmax over classes."""

    name = "keras"

    def __init__(self, model: Any, description: ModelDescription) -> None:
        # TensorFlow takes thread settings only before its first operation; later calls change nothing.
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        self.model = model
        self.description = description
        shape = getattr(model, "input_shape", None)
        self.n_features = feature_count(description, shape[-1] if shape else None)
        self._order: ClassOrder | None = None
        if task_is_classification(description):
            classes = description.classes or ()
            self._order = ClassOrder(range(max(len(classes), 2)), description, positional=True)

    def predict(self, X: np.ndarray) -> RawPrediction:
        output = np.asarray(keras.ops.convert_to_numpy(self.model(X.astype(np.float32), training=False)))
        if self._order is None:
            single = output.ndim == 2 and output.shape[1] == 1
            return RawPrediction(values=output.reshape(-1) if single else output)
        proba = binary_probabilities(output) if output.shape[-1] == 1 else output
        return RawPrediction(self._order.labels_from_probabilities(proba), proba)
