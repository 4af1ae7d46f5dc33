"""scikit-learn models in skops files, loaded against a fixed server-side trust list."""

from __future__ import annotations

import importlib
import inspect
import itertools
import sys
from pathlib import Path
from typing import Any

from mlplatform.formats.base import (
    ArtifactFormat,
    Framework,
    InvalidArtifactError,
    Task,
    UnsafeArtifactError,
)
from mlplatform.formats.describe import ModelFacts, reason, to_label
from mlplatform.formats.safezip import open_checked_zip

FILE_NAME = "model.skops"


def trusted_types(path: Path) -> list[str]:
    """The types beyond skops' own safe defaults that this file needs, once all are on our trust list."""
    import skops.io

    open_checked_zip(path).close()
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises many kinds on a malformed schema
        raise InvalidArtifactError(
            f"The skops file is damaged or not a skops file ({reason(exc)}); export it again."
        ) from exc
    refused = [name for name in untrusted if not is_trusted_type(name)]
    if refused:
        raise UnsafeArtifactError(
            "The skops file contains types that are not scikit-learn estimator classes "
            f"({', '.join(refused)}), which could run code when loaded; rebuild the model without them "
            "(e.g. no FunctionTransformer with a custom function) and export it again."
        )
    return [str(name) for name in untrusted]


def is_trusted_type(name: str) -> bool:
    """Our trust list: classes defined in scikit-learn (estimators, transformers, internals), nothing else.

    skops already trusts builtin containers, numpy arrays, dtypes and ufuncs, and scipy sparse matrices; every
    other type it reports lands here, and functions (builtins.eval, sklearn.utils helpers, ...) are refused.
    """
    module_name, _, attribute = name.rpartition(".")
    if not module_name.startswith("sklearn.") or not all(part.isidentifier() for part in name.split(".")):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    return inspect.isclass(getattr(module, attribute, None))


def load_skops(path: Path) -> Any:
    import skops.io

    trusted = trusted_types(path)
    try:
        return skops.io.load(path, trusted=trusted)
    except Exception as exc:
        raise InvalidArtifactError(
            f"The skops file cannot be loaded ({reason(exc)}); export it again."
        ) from exc


def inspect_skops(path: Path) -> ModelFacts:
    return estimator_facts(load_skops(path), fmt=ArtifactFormat.SKOPS, file_name=FILE_NAME)


def estimator_facts(model: Any, *, fmt: ArtifactFormat, file_name: str) -> ModelFacts:
    """Facts about a fitted object with the scikit-learn API (XGBoost's and LightGBM's wrappers too)."""
    from sklearn.base import is_classifier, is_regressor

    flavour = public_name(type(model))
    if not callable(getattr(model, "predict", None)):
        raise InvalidArtifactError(
            f"The object is a {flavour}, which has no predict method; upload a fitted estimator or pipeline."
        )
    n_features = getattr(model, "n_features_in_", None)
    if n_features is None:
        raise InvalidArtifactError(
            f"The {flavour} is not fitted (it has no n_features_in_); fit it before exporting."
        )
    task = Task.CLASSIFICATION if is_classifier(model) else Task.REGRESSION if is_regressor(model) else None
    names = getattr(model, "feature_names_in_", None)
    classes = getattr(model, "classes_", None) if task is Task.CLASSIFICATION else None
    if isinstance(classes, list):
        raise InvalidArtifactError(
            f"The {flavour} is a multi-output classifier, which is not supported; upload one model per "
            "target."
        )
    return ModelFacts(
        framework=Framework.SKLEARN,
        format=fmt,
        flavour=flavour,
        library_version=_version_of(type(model).__module__),
        file_name=file_name,
        task=task,
        n_features=int(n_features),
        feature_names=[str(name) for name in names] if names is not None else None,
        classes=[to_label(label) for label in classes] if classes is not None else None,
        probabilities=task is Task.CLASSIFICATION and callable(getattr(model, "predict_proba", None)),
        n_outputs=int(getattr(model, "n_outputs_", 1) or 1) if task is Task.REGRESSION else 1,
    )


def public_name(cls: type) -> str:
    """`sklearn.ensemble.RandomForestClassifier`, not `sklearn.ensemble._forest.RandomForestClassifier`."""
    public = itertools.takewhile(lambda part: not part.startswith("_"), cls.__module__.split("."))
    return ".".join([*public, cls.__qualname__])


def _version_of(module_name: str) -> str:
    top = module_name.split(".", 1)[0]
    return str(getattr(sys.modules.get(top), "__version__", ""))
