"""Search spaces and strategies without a cluster: what each strategy proposes, and what a submit refuses."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlplatform.errors import InvalidInput
from mlplatform.formats.base import Task
from mlplatform.training.schemas import SearchSpec, TrainingTrialRead
from mlplatform.training.search import (
    GridSampler,
    RandomSampler,
    TpeSampler,
    best_trial,
    checked_search,
    grid_size,
)


def spec(**values: Any) -> SearchSpec:
    return SearchSpec.model_validate(values)


def test_a_grid_walks_every_point_in_order() -> None:
    search = spec(
        strategy="grid", space={"max_depth": {"int": [2, 4]}, "booster": {"choice": ["gbtree", "dart"]}}
    )
    assert grid_size(search.space) == 6
    sampler = GridSampler(search.space)
    points = [sampler.ask(n) for n in range(6)]
    assert points[:3] == [
        {"max_depth": 2, "booster": "gbtree"},
        {"max_depth": 2, "booster": "dart"},
        {"max_depth": 3, "booster": "gbtree"},
    ]
    assert len({repr(p) for p in points}) == 6


def test_random_draws_are_seeded_within_bounds_and_log_scaled() -> None:
    space = spec(
        space={
            "max_depth": {"int": [1, 1000], "log": True},
            "learning_rate": {"float": [1e-4, 1.0], "log": True},
            "subsample": {"float": [0.5, 1.0]},
            "booster": {"choice": ["gbtree", None]},
        }
    ).space
    draws = [RandomSampler(space, seed=5).ask(n) for n in range(1)] + [RandomSampler(space, seed=6).ask(0)]
    assert draws[0] == RandomSampler(space, seed=5).ask(0) and draws[0] != draws[1]
    sampler = RandomSampler(space, seed=1)
    many = [sampler.ask(n) for n in range(400)]
    assert all(1 <= d["max_depth"] <= 1000 and isinstance(d["max_depth"], int) for d in many)
    assert all(1e-4 <= d["learning_rate"] <= 1.0 and 0.5 <= d["subsample"] <= 1.0 for d in many)
    assert {d["booster"] for d in many} == {"gbtree", None}
    # log scale: about half the draws below the geometric middle of the range
    below = sum(d["learning_rate"] < math.sqrt(1e-4) for d in many) / len(many)
    assert 0.4 < below < 0.6
    assert 0.4 < sum(d["max_depth"] < 32 for d in many) / len(many) < 0.6


def test_a_random_search_does_not_repeat_a_combination_while_others_remain() -> None:
    sampler = RandomSampler(spec(space={"max_depth": {"int": [1, 6]}}).space, seed=0)
    assert sorted(sampler.ask(n)["max_depth"] for n in range(6)) == [1, 2, 3, 4, 5, 6]


def test_tpe_learns_from_what_it_is_told() -> None:
    space = spec(space={"x": {"float": [-10.0, 10.0]}}).space
    sampler = TpeSampler(space, seed=0, direction="minimize")
    tried = []
    for number in range(50):
        x = sampler.ask(number)["x"]
        tried.append(x)
        sampler.tell(number, (x - 3) ** 2 if number != 5 else None)  # trial 5 failed
    # uniform draws over [-10, 10] stray 5.8 from 3 on average; TPE's later ones close in
    assert sum(abs(x - 3) for x in tried[-20:]) / 20 < 2, tried


def trial(number: int, value: float | None, state: str = "succeeded") -> TrainingTrialRead:
    return TrainingTrialRead.model_validate({"number": number, "params": {}, "state": state, "value": value})


def test_the_best_trial_follows_the_metric_direction_and_ties_go_to_the_first() -> None:
    trials = [
        trial(0, 0.4),
        trial(1, 0.9),
        trial(2, 0.9),
        trial(3, None, "failed"),
        trial(4, 0.1, "cancelled"),
    ]
    assert best_trial(trials, "f1") is trials[1]
    assert best_trial(trials, "log_loss") is trials[0]
    assert best_trial([trial(0, None, "failed")], "rmse") is None


def problems(
    search: dict[str, Any], algorithm: str = "xgboost", task: Task = Task.CLASSIFICATION, **fixed: Any
) -> dict[str, str]:
    with pytest.raises(InvalidInput) as raised:
        checked_search(spec(**search), algorithm=algorithm, task=task, hyperparameters=fixed)
    return {d["field"]: d["problem"] for d in raised.value.details}  # type: ignore[union-attr]


def test_a_submit_fills_in_the_defaults() -> None:
    depth = {"max_depth": {"int": [1, 100]}}
    search = checked_search(
        spec(space=depth), algorithm="xgboost", task=Task.CLASSIFICATION, hyperparameters={}
    )
    assert (search.metric, search.trials, search.parallel) == ("f1", 20, None)
    regression = checked_search(
        spec(space=depth), algorithm="xgboost", task=Task.REGRESSION, hyperparameters={}
    )
    assert regression.metric == "rmse"
    grid = spec(
        strategy="grid", space={"max_depth": {"int": [1, 3]}, "booster": {"choice": ["gbtree", "dart"]}}
    )
    assert checked_search(grid, algorithm="xgboost", task=Task.CLASSIFICATION, hyperparameters={}).trials == 6


def test_a_submit_names_every_bad_field() -> None:
    found = problems(
        {
            "space": {
                "max_depht": {"int": [1, 3]},
                "n_estimators": {"int": [1, 3]},
                "gamma": {"float": [0, 1]},
            },
            "strategy": "grid",
            "metric": "rmse",
        },
        n_estimators=10,
    )
    assert set(found) == {
        "search.space.max_depht",
        "search.space.n_estimators",
        "search.space.gamma",
        "search.metric",
    }
    assert "one place" in found["search.space.n_estimators"] and "float" in found["search.space.gamma"]
    forest = problems(
        {"space": {"max_features": {"choice": ["sqrt", "everything"]}}}, algorithm="random_forest"
    )
    assert "'everything' is refused" in forest["search.space.max_features"]
    assert set(
        problems({"space": {"alpha": {"float": [0.1, 1]}}, "metric": "log_loss"}, algorithm="ridge")
    ) == {"search.metric"}


def test_progress_is_scored_on_at_most_twenty_thousand_validation_rows_picked_the_same_way() -> None:
    import numpy as np
    import pandas as pd

    from mlplatform.training.fitting import PROGRESS_ROWS, progress_rows

    X, y = np.arange(50_000 * 2).reshape(50_000, 2), np.arange(50_000)
    X_small, y_small = progress_rows(X, y)
    assert len(y_small) == PROGRESS_ROWS == 20_000
    assert (X_small[:, 0] == y_small * 2).all()  # rows stay paired
    again = progress_rows(pd.DataFrame(X), pd.Series(y))
    assert (again[1].to_numpy() == y_small).all()  # the same rows for pandas input
    few = np.arange(10)
    assert progress_rows(few, few)[1] is few
