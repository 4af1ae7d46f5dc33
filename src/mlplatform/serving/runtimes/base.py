"""The runtime interface every framework implements, its outputs, and the class bookkeeping they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlplatform.formats.base import FeatureType, ModelDescription, Task

Label = str | int | float | bool


@dataclass(slots=True)
class RawPrediction:
    """What a runtime returns for n rows.

    `values` holds class labels (taken from `description.classes`) for classifiers and numbers for
    regressors; `probabilities` is n_rows × n_classes with columns in `description.classes` order, or None
    when the model has none (regressors, hinge-loss classifiers).
    """

    values: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class CompileReport:
    """Which engine serves a model and why: the compiled one (outputs matched the native library) or not."""

    runtime: str
    compiled: bool
    max_abs_diff: float | None
    tolerance: float
    reason: str
    # Large batches may go to another engine that agrees but is faster per row (see runtimes/split.py).
    batch_runtime: str | None = None
    batch_threshold: int | None = None  # rows from which `batch_runtime` predicts
    microseconds_per_row: dict[str, float] | None = None  # each engine, timed on a 1000-row batch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# scikit-learn estimators whose prediction is the mean of their trees' `tree_` predictions (one tree: itself):
# the native runtime sums them without joblib, and trees.py builds them into ONNX from those arrays.
TREE_AVERAGES = frozenset(
    {
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "ExtraTreeClassifier",
        "ExtraTreeRegressor",
        "RandomForestClassifier",
        "RandomForestRegressor",
        "ExtraTreesClassifier",
        "ExtraTreesRegressor",
    }
)


class NotCompilable(Exception):
    """The model is not a tree ensemble or linear model the compiler handles; the message says why."""


class Runtime(ABC):
    """A loaded model ready to predict in-process.

    `predict` takes a 2-D array whose columns follow `description.features` (floats; an object array when a
    feature is a string, holding str or None there) and returns a `RawPrediction`. It is synchronous and
    thread-safe: the server calls it on the event loop for small inputs and from an executor for large
    batches, possibly at the same time. Implementations pin their engine to one thread, so a single-row call
    never waits on a thread pool. `warm_up` runs a few predictions so that the
    first request does not pay for lazy initialisation (allocations, graph optimisation, thread start-up).
    """

    name: str
    description: ModelDescription
    n_features: int

    @abstractmethod
    def predict(self, X: np.ndarray) -> RawPrediction: ...

    def warm_up(self) -> None:
        for rows in (1, 1, 1, 64):
            self.predict(sample_input(self.description, self.n_features, rows))

    def accepts_missing_strings(self) -> bool:
        """Whether a string feature may be missing (None) in a request: the model predicts such a row.
        Probed once at load, so a model that would fail on it keeps refusing nulls with a 422."""
        if not string_columns(self.description):
            return False
        row = sample_input(self.description, self.n_features, 1, text=None)
        try:
            self.predict(row)
        except Exception:
            return False
        return True


def synthetic_sample(n_features: int, rows: int = 300) -> np.ndarray:
    """Deterministic rows around zero at a few scales, for warm-up and for comparing engines."""
    rng = np.random.default_rng(0)
    scales = np.resize(np.array([1.0, 10.0, 100.0]), rows)[:, None]
    sample = rng.standard_normal((rows, n_features)) * scales
    sample[0] = 0.0
    return sample


def string_columns(description: ModelDescription) -> list[int]:
    return [i for i, feature in enumerate(description.features) if feature.type is FeatureType.STRING]


def sample_input(
    description: ModelDescription, n_features: int, rows: int = 300, *, text: str | None = "0"
) -> np.ndarray:
    """`synthetic_sample`, with `text` in the string features (then an object array), for warm-up and the
    load-time checks of models that take strings. "0" is a category no encoder has seen and still a number
    to a model that only declares a feature as a string (it then converts it)."""
    sample = synthetic_sample(n_features, rows)
    strings = string_columns(description)
    if not strings:
        return sample
    mixed = sample.astype(object)
    mixed[:, strings] = text
    return mixed


def feature_count(description: ModelDescription, fallback: int | None) -> int:
    if description.features:
        return len(description.features)
    if fallback is None:
        raise ValueError(
            "the description has no input signature and the model does not say its feature count"
        )
    return fallback


class ClassOrder:
    """Maps a model's output columns onto `description.classes`.

    `model_classes` are the labels behind the model's probability columns, in column order (an sklearn
    estimator's `classes_`), matched to the description by value. With `positional` the model's columns are
    class indices (boosters) and the description's classes name them in the same order.
    """

    def __init__(
        self, model_classes: Sequence[Any], description: ModelDescription, *, positional: bool = False
    ) -> None:
        own = [_plain(c) for c in model_classes]
        wanted = list(description.classes) if description.classes is not None else own
        if len(wanted) != len(own):
            raise ValueError(f"the model has {len(own)} classes but the description lists {len(wanted)}")
        self.labels = _label_array(wanted)
        self.model_labels = np.asarray(own, dtype=object if _mixed(own) else None)
        columns = list(range(len(own))) if positional else _match(own, wanted)
        self.columns: np.ndarray | None = None if columns == list(range(len(own))) else np.asarray(columns)
        # position in description order of each model column
        self._to_description = np.argsort(np.asarray(columns))
        self._sorter = np.argsort(self.model_labels, kind="stable")
        # One row (the common request): a dictionary lookup instead of three array passes.
        self._position_of = {label: int(self._to_description[column]) for column, label in enumerate(own)}

    def __len__(self) -> int:
        return len(self.labels)

    def probabilities(self, proba: np.ndarray) -> np.ndarray:
        return proba if self.columns is None else proba[:, self.columns]

    def labels_from_probabilities(self, proba: np.ndarray) -> np.ndarray:
        """Labels of the most probable class; `proba` must already be in description order. A tie goes to
        the class the model lists first (what its own `predict` answers), whatever the description's order."""
        if self.columns is None:
            return np.asarray(self.labels[np.argmax(proba, axis=1)])
        first = np.argmax(proba[:, self._to_description], axis=1)  # in the model's column order
        return np.asarray(self.labels[self._to_description[first]])

    def labels_from_model(self, predicted: np.ndarray) -> np.ndarray:
        """The description's labels for labels the model emitted itself (values of `model_classes`)."""
        if len(predicted) == 1:
            position = self._position_of.get(_plain(predicted[0]))
            if position is None:
                raise ValueError("the model predicted a label that is not one of its classes")
            return self.labels[[position]]
        where = np.searchsorted(self.model_labels, predicted, sorter=self._sorter)
        column = self._sorter[np.minimum(where, len(self._sorter) - 1)]
        if not np.array_equal(self.model_labels[column], predicted):
            raise ValueError("the model predicted a label that is not one of its classes")
        return np.asarray(self.labels[self._to_description[column]])


def binary_probabilities(positive: np.ndarray) -> np.ndarray:
    positive = positive.reshape(-1)
    return np.column_stack((1.0 - positive, positive))


def task_is_classification(description: ModelDescription) -> bool:
    return description.task is Task.CLASSIFICATION


def _plain(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _mixed(labels: Sequence[Any]) -> bool:
    return len({type(label) for label in labels}) > 1


def _label_array(labels: Sequence[Any]) -> np.ndarray:
    return np.asarray(labels, dtype=object if _mixed(labels) else None)


def _match(own: Sequence[Any], wanted: Sequence[Any]) -> list[int]:
    """For each description class, the model column holding it (compared by value, then by text)."""
    for key in (lambda c: c, str):
        index = {key(c): i for i, c in enumerate(own)}
        if len(index) == len(own) and all(key(c) in index for c in wanted):
            return [index[key(c)] for c in wanted]
    raise ValueError(f"description.classes {list(wanted)!r} do not match the model's classes {list(own)!r}")
