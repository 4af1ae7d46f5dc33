"""A forest's progress score from a running sum of its new trees equals scikit-learn's own `score` of the
whole forest after every warm-started chunk (classifier with three classes, regressor)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from mlplatform.training.fitting import ForestScore


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_the_running_sum_scores_like_the_whole_forest(kind: str) -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 6))
    signal = X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.7, size=len(X))
    if kind == "classifier":
        y = np.digitize(signal, [-0.5, 0.5])  # three classes
        model = RandomForestClassifier(max_depth=8, random_state=0)
    else:
        y = signal
        model = RandomForestRegressor(max_depth=8, random_state=0)
    X_train, X_val, y_train, y_val = X[:2000], X[2000:], y[:2000], y[2000:]
    score = ForestScore(X_val, y_val)
    for trees in (3, 6, 9, 12):
        model.set_params(warm_start=True, n_estimators=trees).fit(X_train, y_train)
        assert score.after(model) == pytest.approx(model.score(X_val, y_val), abs=1e-12)
    assert score.trees == 12


def test_sparse_rows_are_scored_by_the_forest_itself() -> None:
    rng = np.random.default_rng(1)
    X = scipy.sparse.random(400, 5, density=0.5, random_state=1, format="csr")
    y = rng.integers(0, 2, size=400)
    model = RandomForestClassifier(n_estimators=4, random_state=0).fit(X, y)
    assert ForestScore(X, y).after(model) == model.score(X, y)
