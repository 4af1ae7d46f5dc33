"""Keras 3 `.keras` files (optional extra): built-in layers only, loaded in safe mode without compiling."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlplatform.formats.base import ArtifactFormat, Framework, InvalidArtifactError, Task, UnsafeArtifactError
from mlplatform.formats.describe import ModelFacts, reason
from mlplatform.formats.safezip import open_checked_zip, read_member

FILE_NAME = "model.keras"
INSTALL_HINT = "pip install 'mlplatform[tensorflow]'"
_MAX_CONFIG_BYTES = 64 * 1024**2
_CODE_CLASSES = {"Lambda", "__lambda__", "TFOpLambda"}


def check_config(path: Path) -> None:
    """Refuse configs that name code outside Keras (custom objects, Lambda layers) before Keras reads them."""
    with open_checked_zip(path) as archive:
        raw = read_member(archive, "config.json", limit=_MAX_CONFIG_BYTES)
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidArtifactError(
            f"The Keras file's config.json is not valid JSON ({reason(exc)}); save it again."
        ) from exc
    refused: set[str] = set()
    pending: list[Any] = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
            refused |= _refused(node)
    if refused:
        raise UnsafeArtifactError(
            f"The Keras model refers to code outside Keras ({', '.join(sorted(refused))}), which the server "
            "does not load; rebuild it with built-in Keras layers only, or export it to ONNX."
        )


def _refused(node: dict[str, Any]) -> set[str]:
    module, class_name, registered = node.get("module"), node.get("class_name"), node.get("registered_name")
    if class_name in _CODE_CLASSES:
        return {f"a {class_name} layer"}
    keras_module = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
    builtin_function = module == "builtins" and class_name == "function"  # a named Keras activation
    if isinstance(module, str) and not keras_module and not builtin_function:
        return {f"{module}.{class_name}"}
    if isinstance(registered, str) and ">" in registered:
        return {registered}
    return set()


def _keras() -> Any:
    try:
        import keras
    except ImportError as exc:
        raise InvalidArtifactError(
            "The model is a Keras .keras file but this server has no TensorFlow/Keras; install it with "
            f"{INSTALL_HINT}."
        ) from exc
    return keras


def load_keras(path: Path) -> Any:
    check_config(path)
    keras = _keras()
    with tempfile.TemporaryDirectory() as folder:
        if path.suffix != ".keras":  # Keras picks its loader by the name's suffix
            path = Path(shutil.copyfile(path, Path(folder) / FILE_NAME))
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many kinds on a broken file
            raise InvalidArtifactError(
                f"Keras cannot load the model ({reason(exc)}); save it again with model.save()."
            ) from exc


def inspect_keras(path: Path) -> ModelFacts:
    model = load_keras(path)
    version = str(_keras().__version__)
    widths = [tuple(tensor.shape) for tensor in model.inputs]
    if any(len(shape) != 2 or shape[1] is None for shape in widths):
        raise InvalidArtifactError(
            f"The Keras model's inputs have shapes {widths}; only tabular models (batch, features) are "
            "accepted."
        )
    output_width = int(tuple(model.outputs[0].shape)[-1] or 1)
    activation = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
    if activation == "softmax" and output_width > 1:
        task, n_classes = Task.CLASSIFICATION, output_width
    elif activation == "sigmoid" and output_width == 1:
        task, n_classes = Task.CLASSIFICATION, 2
    else:
        task, n_classes = Task.REGRESSION, None
    one_column = all(shape[1] == 1 for shape in widths) and len(widths) > 1
    return ModelFacts(
        framework=Framework.KERAS,
        format=ArtifactFormat.KERAS,
        flavour=f"keras.{type(model).__name__}",
        library_version=version,
        file_name=FILE_NAME,
        task=task,
        task_is_certain=False,  # guessed from the final activation: the metadata's task wins
        n_features=sum(int(shape[1]) for shape in widths),
        feature_names=[tensor.name for tensor in model.inputs] if one_column else None,
        n_classes=n_classes,
        probabilities=task is Task.CLASSIFICATION,
        n_outputs=output_width if task is Task.REGRESSION else 1,
    )
