"""What the format readers find in an artifact, and how upload hints complete or contradict it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplatform.formats.base import (
    ArtifactFormat,
    Feature,
    FeatureType,
    Framework,
    InvalidArtifactError,
    ModelDescription,
    Task,
)

Label = str | int | float | bool


@dataclass(frozen=True)
class ModelHints:
    """What the upload's metadata says about the model; every field is optional."""

    feature_names: list[str] | None = None
    feature_types: dict[str, FeatureType] | None = None
    task: Task | None = None
    classes: list[str | int] | None = None


@dataclass(frozen=True)
class InspectedArtifact:
    description: ModelDescription
    path: Path  # the single-file artifact to store (a model extracted from an MLflow zip, else the upload)


@dataclass(frozen=True)
class ModelFacts:
    """What one reader learnt from the artifact itself; None means the artifact cannot tell."""

    framework: Framework
    format: ArtifactFormat
    flavour: str
    library_version: str
    file_name: str
    task: Task | None = None
    task_is_certain: bool = True  # False: a guess (e.g. from a final activation) that a hint may override
    n_features: int | None = None
    feature_names: list[str] | None = None
    feature_types: list[FeatureType] | None = None
    classes: list[Label] | None = None
    n_classes: int | None = None
    probabilities: bool = False
    prediction_type: str | None = None
    n_outputs: int = 1


def describe(facts: ModelFacts, hints: ModelHints) -> ModelDescription:
    """Combine the artifact's facts with the upload's hints; a hint may fill a gap but never contradict."""
    task = _resolve_task(facts, hints)
    features = _resolve_features(facts, hints)
    classes = _resolve_classes(facts, hints) if task is Task.CLASSIFICATION else None
    if task is Task.REGRESSION and hints.classes:
        raise InvalidArtifactError(
            "The metadata lists classes but the model is a regressor; remove the classes or upload a "
            "classifier."
        )
    return ModelDescription(
        framework=facts.framework,
        format=facts.format,
        flavour=facts.flavour,
        task=task,
        features=features,
        classes=tuple(classes) if classes is not None else None,
        outputs=_outputs(facts, task, classes),
        library_version=facts.library_version,
        file_name=facts.file_name,
    )


def _resolve_task(facts: ModelFacts, hints: ModelHints) -> Task:
    hinted = Task(hints.task) if hints.task is not None else None
    if facts.task is None or not facts.task_is_certain:
        task = hinted or facts.task
        if task is None:
            raise InvalidArtifactError(
                "The model does not say whether it is a classifier or a regressor; set task to "
                "'classification' or 'regression' in the metadata."
            )
        return task
    if hinted is not None and hinted is not facts.task:
        raise InvalidArtifactError(
            f"The metadata says the task is {hinted.value} but the model is a {facts.task.value} model; fix "
            "the task in the metadata or upload the intended model."
        )
    return facts.task


def _resolve_features(facts: ModelFacts, hints: ModelHints) -> tuple[Feature, ...]:
    expected = facts.n_features
    if facts.feature_names is not None:
        names = list(facts.feature_names)
        if hints.feature_names is not None and list(hints.feature_names) != names:
            raise InvalidArtifactError(
                f"The metadata gives the feature names {_short(hints.feature_names)} but the model was "
                f"trained on {_short(names)}; send the model's names in its order, or leave them out."
            )
    elif hints.feature_names is not None:
        names = list(hints.feature_names)
        if expected is not None and len(names) != expected:
            raise InvalidArtifactError(
                f"The metadata gives {len(names)} feature names but the model expects {expected} features; "
                "send exactly one name per model input column."
            )
    elif expected is not None:
        names = [f"f{i}" for i in range(expected)]
    else:
        raise InvalidArtifactError(
            "The model does not say how many input features it takes; list them in feature_names in the "
            "metadata."
        )
    if len(set(names)) != len(names):
        raise InvalidArtifactError(
            f"The feature names {_short(names)} repeat a name; give every feature its own."
        )
    types = list(facts.feature_types) if facts.feature_types else [FeatureType.FLOAT] * len(names)
    if len(types) != len(names):
        types = [FeatureType.FLOAT] * len(names)
    overrides = hints.feature_types or {}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise InvalidArtifactError(
            f"The metadata gives types for unknown features {_short(unknown)}; use names from "
            f"{_short(names)}."
        )
    return tuple(
        Feature(name, FeatureType(overrides.get(name, kind))) for name, kind in zip(names, types, strict=True)
    )


def _resolve_classes(facts: ModelFacts, hints: ModelHints) -> list[Label] | None:
    own = facts.classes
    if own is None and facts.n_classes is not None:
        own = list(range(facts.n_classes))
    if hints.classes is None:
        return own
    hinted: list[Label] = list(hints.classes)
    if own is None:
        return hinted
    if own == list(range(len(own))) and all(type(label) is int for label in own):
        # Encoded labels (XGBoost, LightGBM, ONNX from them): the hint names them, in index order.
        if len(hinted) != len(own):
            raise InvalidArtifactError(
                f"The metadata lists {len(hinted)} classes but the model predicts {len(own)} classes; list "
                "one class per model output, in the order of its label encoding."
            )
        return hinted
    if [str(label) for label in hinted] != [str(label) for label in own]:
        raise InvalidArtifactError(
            f"The metadata lists the classes {_short(hinted)} but the model predicts {_short(own)}; fix the "
            "classes in the metadata or leave them out."
        )
    return own


def _outputs(facts: ModelFacts, task: Task, classes: Sequence[Label] | None) -> dict[str, Any]:
    if task is Task.REGRESSION:
        prediction: dict[str, Any] = {"type": "float"}
        if facts.n_outputs > 1:
            prediction["shape"] = [facts.n_outputs]
        return {"prediction": prediction}
    outputs: dict[str, Any] = {"prediction": {"type": _label_type(classes, facts.prediction_type)}}
    if facts.probabilities:
        outputs["probabilities"] = {"classes": list(classes) if classes is not None else None}
    return outputs


def _label_type(classes: Sequence[Label] | None, fallback: str | None) -> str:
    if not classes:
        return fallback or "int"
    if all(isinstance(label, bool) for label in classes):
        return "bool"
    if all(isinstance(label, int) and not isinstance(label, bool) for label in classes):
        return "int"
    if all(isinstance(label, float) for label in classes):
        return "float"
    return "string"


def to_label(value: Any) -> Label:
    """A plain Python label from a numpy scalar or a Python value."""
    plain = value.item() if hasattr(value, "item") else value
    if isinstance(plain, str | int | float | bool):
        return plain
    return str(plain)


def reason(exc: BaseException) -> str:
    """A library's error as a short clause for our messages: its first line, without log prefixes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r"^\[[\d:]+\] [^ ]+:\d+: ", "", lines[0]) if lines else type(exc).__name__
    text = text.rstrip(".")
    return text if len(text) <= 200 else text[:199] + "…"


def _short(values: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    more = f", … ({len(values)} in all)" if len(values) > limit else ""
    return f"[{shown}{more}]"
