"""A job's seed becomes its estimator's random_state, unless the job's hyperparameters say otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from mlplatform.formats.base import Task
from mlplatform.training.algorithms import ALGORITHMS, estimator_class, seeded


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_estimator_with_a_random_state_gets_the_seed(algorithm: str) -> None:
    for task in ALGORITHMS[algorithm].tasks():
        estimator = estimator_class(algorithm, task)
        params = seeded(estimator, {}, 11)
        if "random_state" in estimator().get_params():
            assert params == {"random_state": 11}
            assert estimator(**params).get_params()["random_state"] == 11
        else:  # linear regression draws nothing at random
            assert params == {}


def test_an_explicit_random_state_is_kept_even_null() -> None:
    forest = estimator_class("random_forest", Task.REGRESSION)
    assert seeded(forest, {"random_state": 3, "n_estimators": 5}, 11) == {
        "random_state": 3,
        "n_estimators": 5,
    }
    assert seeded(forest, {"random_state": None}, 11) == {"random_state": None}
    hyperparameters = {"n_estimators": 5}
    seeded(forest, hyperparameters, 11)
    assert hyperparameters == {"n_estimators": 5}  # the job's own dict is not changed


def test_the_same_seed_fits_the_same_forest_and_another_seed_another() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X[:, 0] + rng.normal(scale=0.5, size=200)
    forest = estimator_class("random_forest", Task.REGRESSION)

    def fitted(seed: int) -> np.ndarray:
        return np.asarray(forest(**seeded(forest, {"n_estimators": 5}, seed)).fit(X, y).predict(X))

    assert np.array_equal(fitted(1), fitted(1))
    assert not np.array_equal(fitted(1), fitted(2))
