"""LightGBM's held-out predictions kept at its last round (`LastPredictions`) are the final model's own, so
the job's validation metrics from them equal scikit-learn's on `predict_proba` / `predict` of the saved
model; anything else (no round ran, values that are not the model's) falls back to predicting."""

from __future__ import annotations

import inspect
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from mlplatform.formats.base import Task
from mlplatform.training.fitting import LastPredictions, evaluate


def rows(kind: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(6_000, 8))
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values go their learned way in both
    signal = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) * 0.7 + rng.normal(scale=0.6, size=len(X))
    if kind == "regression":
        return X, signal * 30 + 100
    if kind == "multiclass":
        return X, np.digitize(signal, [-0.7, 0.0, 0.7])
    return X, (signal > 0).astype(np.int64)


def fitted(kind: str, X: Any, y: Any, **extra: Any) -> tuple[Any, LastPredictions]:
    kept = LastPredictions()
    estimator = lightgbm.LGBMRegressor if kind == "regression" else lightgbm.LGBMClassifier
    model = estimator(n_estimators=25, num_leaves=15, n_jobs=1, verbose=-1)
    held_out = X[4_000:], y[4_000:]
    if "eval_X" in inspect.signature(model.fit).parameters:  # lightgbm >= 4.7 deprecates eval_set
        extra.update(eval_X=(held_out[0],), eval_y=(held_out[1],))
    else:
        extra.update(eval_set=[held_out])
    model.fit(X[:4_000], y[:4_000], callbacks=[kept.at_round], **extra)
    return model, kept


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_the_kept_predictions_are_the_final_models_and_give_the_same_metrics(kind: str) -> None:
    X, y = rows(kind)
    model, kept = fitted(kind, X, y)
    found = kept.predictions(model, X[4_000:])
    assert found is not None
    own = model.predict(X[4_000:]) if kind == "regression" else model.predict_proba(X[4_000:])
    assert_allclose(found, own, rtol=0, atol=1e-12)
    task = Task.REGRESSION if kind == "regression" else Task.CLASSIFICATION
    from_kept = evaluate(model, task, X[4_000:], y[4_000:], None, found)
    assert from_kept == pytest.approx(evaluate(model, task, X[4_000:], y[4_000:]), rel=1e-12)


def test_categorical_frames_and_a_resumed_fit_keep_the_final_models_predictions() -> None:
    X, y = rows("binary")
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["city"] = pd.Categorical(np.random.default_rng(2).choice(["oslo", "rome", "lima"], len(frame)))
    first = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=15, verbose=-1).fit(frame[:4_000], y[:4_000])
    model, kept = fitted("binary", frame, y, init_model=first.booster_)
    assert model.booster_.current_iteration() == 35
    found = kept.predictions(model, frame[4_000:])
    assert found is not None
    assert_allclose(found, model.predict_proba(frame[4_000:]), rtol=0, atol=1e-12)


def test_without_a_round_or_with_values_not_the_models_nothing_is_kept() -> None:
    X, y = rows("binary")
    model, kept = fitted("binary", X, y)
    assert LastPredictions().predictions(model, X[4_000:]) is None  # no round ran
    kept.values = np.asarray(kept.values) * 0.5
    assert kept.predictions(model, X[4_000:]) is None
    kept.values = np.asarray(kept.values)[:-1]
    assert kept.predictions(model, X[4_000:]) is None
