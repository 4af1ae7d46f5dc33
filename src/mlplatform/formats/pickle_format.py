"""Pickle and joblib files: refused unless the operator allows pickles, then loaded with joblib."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mlplatform.formats.base import ArtifactFormat, InvalidArtifactError, UnsafeArtifactError
from mlplatform.formats.describe import ModelFacts, reason
from mlplatform.formats.lightgbm_format import check_model_text, header_facts
from mlplatform.formats.skops_format import estimator_facts
from mlplatform.formats.xgboost_checks import check_model
from mlplatform.formats.xgboost_format import booster_facts

FILE_NAME = "model.pkl"
SAFE_EXPORTS = (
    "skops.io.dump(model, 'model.skops') for scikit-learn, model.save_model('model.ubj') for XGBoost, "
    "booster.save_model('model.txt') for LightGBM, or an ONNX export made with skl2onnx"
)
REFUSAL = (
    "The artifact is a pickle/joblib file, which runs code when it is loaded, and this server refuses "
    f"pickles (ml.models.allow-pickle is false); export it in a safe format instead: {SAFE_EXPORTS}."
)


def load_pickle(path: Path, *, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise UnsafeArtifactError(REFUSAL)
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling raises anything the pickled code raises
        raise InvalidArtifactError(
            f"The pickle/joblib file cannot be loaded ({type(exc).__name__}: {reason(exc)}); export the "
            f"model in a safe format instead: {SAFE_EXPORTS}."
        ) from exc


def inspect_pickle(path: Path, *, allow_pickle: bool) -> ModelFacts:
    return object_facts(load_pickle(path, allow_pickle=allow_pickle))


def object_facts(model: Any) -> ModelFacts:
    """Facts about an unpickled object: a raw XGBoost/LightGBM Booster, or anything with the sklearn API."""
    cls = type(model)
    package = cls.__module__.split(".", 1)[0]
    if package == "xgboost" and cls.__name__ == "Booster":
        import xgboost

        document = json.loads(model.save_raw(raw_format="json"))
        check_model(document)
        return booster_facts(
            document, fmt=ArtifactFormat.PICKLE, file_name=FILE_NAME, version=xgboost.__version__
        )
    if package == "lightgbm" and cls.__name__ == "Booster":
        import lightgbm

        header, _ = check_model_text(model.model_to_string().encode("utf-8"))
        facts = header_facts(
            header, [str(name) for name in model.feature_name()], version=lightgbm.__version__
        )
        return dataclasses.replace(facts, format=ArtifactFormat.PICKLE, file_name=FILE_NAME)
    return estimator_facts(model, fmt=ArtifactFormat.PICKLE, file_name=FILE_NAME)
