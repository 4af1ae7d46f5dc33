"""XGBoost models saved with save_model as UBJ or JSON, checked in Python before XGBoost parses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlplatform.formats.base import ArtifactFormat, FeatureType, Framework, InvalidArtifactError, Task
from mlplatform.formats.describe import ModelFacts, reason
from mlplatform.formats.ubjson import decode_ubjson
from mlplatform.formats.xgboost_checks import check_model

FILE_NAMES = {ArtifactFormat.XGBOOST_UBJ: "model.ubj", ArtifactFormat.XGBOOST_JSON: "model.json"}
MAX_JSON_DEPTH = 64
_PROBABILISTIC = {"binary:logistic", "multi:softprob"}
_FEATURE_TYPES = {"int": FeatureType.INT, "i": FeatureType.BOOL}


def load_booster(path: Path, fmt: ArtifactFormat) -> Any:
    """The xgboost.Booster, once its bytes and its trees are known not to crash XGBoost."""
    import xgboost

    booster, _ = _load(path, fmt, xgboost)
    return booster


def inspect_xgboost(path: Path, fmt: ArtifactFormat) -> ModelFacts:
    import xgboost

    _, model = _load(path, fmt, xgboost)
    return booster_facts(model, fmt=fmt, file_name=FILE_NAMES[fmt], version=xgboost.__version__)


def _load(path: Path, fmt: ArtifactFormat, xgboost: Any) -> tuple[Any, dict[str, Any]]:
    data = path.read_bytes()
    model = decode_ubjson(data) if fmt is ArtifactFormat.XGBOOST_UBJ else _parse_json(data)
    check_model(model)
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgboost.core.XGBoostError as exc:
        raise InvalidArtifactError(
            f"XGBoost cannot load the model ({reason(exc)}); save it again with save_model and upload the "
            "new file."
        ) from exc
    return booster, model


def _parse_json(data: bytes) -> Any:
    too_deep = InvalidArtifactError(
        f"The XGBoost JSON model nests deeper than {MAX_JSON_DEPTH} levels, which no XGBoost model does; "
        "save it again with save_model('model.json')."
    )
    try:
        document = json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError as exc:
        raise too_deep from exc
    except ValueError as exc:
        raise InvalidArtifactError(
            f"The XGBoost JSON model is not valid JSON ({reason(exc)}); save it again with "
            "save_model('model.json')."
        ) from exc
    level: list[Any] = [document]
    for _ in range(MAX_JSON_DEPTH):  # XGBoost's parser recurses, so the depth is bounded here first
        level = [child for value in level for child in _children(value)]
    if level:
        raise too_deep
    return document


def _children(value: Any) -> list[Any]:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [item for item in items if isinstance(item, dict | list)]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # XGBoost and Python could read different values for a repeated key: refuse it.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("an object repeats a key")
    return dict(pairs)


def booster_facts(model: dict[str, Any], *, fmt: ArtifactFormat, file_name: str, version: str) -> ModelFacts:
    """Facts from the model's document (as saved, or as save_raw('json') returns it), once checked."""
    learner = model["learner"]
    params = learner["learner_model_param"]
    objective = str(learner["objective"]["name"])
    n_classes = int(params.get("num_class", 0))
    estimator_type = _wrapper_attributes(learner).get("_estimator_type")
    if estimator_type in ("classifier", "regressor"):
        task = Task.CLASSIFICATION if estimator_type == "classifier" else Task.REGRESSION
    else:
        task = Task.CLASSIFICATION if objective.startswith(("binary:", "multi:")) else Task.REGRESSION
    names = [str(name) for name in learner.get("feature_names") or []]
    types = [_FEATURE_TYPES.get(str(kind), FeatureType.FLOAT) for kind in learner.get("feature_types") or []]
    return ModelFacts(
        framework=Framework.XGBOOST,
        format=fmt,
        flavour=f"xgboost.Booster[{objective}]",
        library_version=version,
        file_name=file_name,
        task=task,
        n_features=int(params["num_feature"]),
        feature_names=names or None,
        feature_types=types or None,
        n_classes=max(n_classes, 2) if task is Task.CLASSIFICATION else None,
        probabilities=objective in _PROBABILISTIC,
        n_outputs=int(params.get("num_target", 1)),
    )


def _wrapper_attributes(learner: dict[str, Any]) -> dict[str, Any]:
    """What XGBoost's scikit-learn wrapper recorded (e.g. its _estimator_type), if anything readable."""
    try:
        attributes = json.loads(learner.get("attributes", {}).get("scikit_learn") or "{}")
    except (ValueError, RecursionError):
        return {}
    return attributes if isinstance(attributes, dict) else {}
