"""Hyperparameter search: checking a search at submit, the metrics it optimises, and the three strategies.

The trials themselves run as Dask tasks from a coordinator task (`training/trials.py`); this module holds
what both sides need and imports no heavy library at module level (Optuna only when a TPE search starts).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from mlplatform.errors import InvalidInput
from mlplatform.formats.base import Task
from mlplatform.training.algorithms import ALGORITHMS, estimator_class, parameter_problems
from mlplatform.training.schemas import MAX_TRIALS, SearchDimension, SearchSpec, TrainingTrialRead

Direction = Literal["maximize", "minimize"]
DIRECTIONS: dict[str, Direction] = {
    "accuracy": "maximize",
    "precision": "maximize",
    "recall": "maximize",
    "f1": "maximize",
    "roc_auc": "maximize",
    "log_loss": "minimize",
    "rmse": "minimize",
    "mae": "minimize",
    "r2": "maximize",
}
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    Task.CLASSIFICATION: ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
}
# F1 by default: every classifier gives it (ridge has no probabilities for roc_auc or log_loss), and unlike
# accuracy it does not reward always predicting the majority class of an imbalanced target.
DEFAULT_METRIC = {Task.CLASSIFICATION: "f1", Task.REGRESSION: "rmse"}
PROBABILITY_METRICS = frozenset({"roc_auc", "log_loss"})
DEFAULT_TRIALS = 20
REDRAWS = 100  # a random search draws again when it hits a combination it already tried

Params = dict[str, Any]


def grid_size(space: dict[str, SearchDimension]) -> int:
    """Points in the grid (0 when a dimension is a float range: it has no points)."""
    size = 1
    for d in space.values():
        if d.choice is not None:
            size *= len(d.choice)
        elif d.int_range is not None:
            size *= d.int_range[1] - d.int_range[0] + 1
        else:
            return 0
    return size


def _grid_values(dimension: SearchDimension) -> list[Any]:
    if dimension.choice is not None:
        return list(dimension.choice)
    assert dimension.int_range is not None
    return list(range(dimension.int_range[0], dimension.int_range[1] + 1))


def checked_search(
    search: SearchSpec, *, algorithm: str, task: Task, hyperparameters: dict[str, Any]
) -> SearchSpec:
    """The search with its defaults filled in (metric, trials), or InvalidInput naming each bad field.

    Each searched name must be a parameter of the estimator and not also fixed in `hyperparameters`; for
    scikit-learn, each range end and choice must pass the estimator's own parameter check.
    """
    problems: list[dict[str, str]] = []

    def refuse(field: str, problem: str) -> None:
        problems.append({"field": f"search.{field}", "problem": problem})

    for name, problem in parameter_problems(algorithm, task, dict(search.space)).items():
        refuse(f"space.{name}", problem)
    for name, dimension in search.space.items():
        if name in hyperparameters:
            refuse(f"space.{name}", "also fixed in hyperparameters: give it in one place")
        elif not any(p["field"] == f"search.space.{name}" for p in problems):
            refused = _value_problem(algorithm, task, name, dimension)
            if refused:
                refuse(f"space.{name}", refused)
    trials = search.trials
    if search.strategy == "grid":
        floats = [name for name, d in search.space.items() if d.float_range is not None]
        for name in floats:
            refuse(f"space.{name}", "a grid takes choice or int ranges only (a float range has no points)")
        size = grid_size(search.space)
        if not floats and size > MAX_TRIALS:
            refuse("space", f"the grid has {size} points; at most {MAX_TRIALS}")
        elif not floats and trials is not None and trials != size:
            refuse("trials", f"a grid of {size} points runs {size} trials: leave trials out")
        trials = size
    metric = search.metric or DEFAULT_METRIC[task]
    if metric not in TASK_METRICS[task]:
        refuse("metric", f"{task.value} is measured by one of {', '.join(TASK_METRICS[task])}")
    elif metric in PROBABILITY_METRICS and not hasattr(estimator_class(algorithm, task), "predict_proba"):
        refuse("metric", f"{algorithm} gives no probabilities, so no {metric}: choose another metric")
    trials = trials or DEFAULT_TRIALS
    points = grid_size(search.space)
    if search.strategy != "grid" and 0 < points < trials:
        refuse("trials", f"the space holds {points} combinations: use a grid (each once) or fewer trials")
    if search.parallel is not None and search.parallel > trials:
        refuse("parallel", f"more than the {trials} trials")
    if problems:
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise InvalidInput(f"search: {summary}", details=problems)
    return search.model_copy(update={"metric": metric, "trials": trials})


def _value_problem(algorithm: str, task: Task, name: str, dimension: SearchDimension) -> str | None:
    """scikit-learn's own check (`_validate_params`, one parameter at a time) on each range end and choice."""
    if ALGORITHMS[algorithm].library != "sklearn":
        return None  # XGBoost and LightGBM check values when fitting: such a trial fails and says why
    values = dimension.choice or list(dimension.int_range or dimension.float_range or ())
    estimator_type = estimator_class(algorithm, task)
    for value in values:
        try:
            estimator_type(**{name: value})._validate_params()
        except (TypeError, ValueError) as exc:
            return f"{value!r} is refused: {exc}"[:500]
    return None


def better(value: float, than: float | None, direction: Direction) -> bool:
    if than is None:
        return True
    return value > than if direction == "maximize" else value < than


def best_trial(trials: list[TrainingTrialRead], metric: str) -> TrainingTrialRead | None:
    """The succeeded trial with the best metric; on a tie the one started first."""
    best: TrainingTrialRead | None = None
    for trial in sorted(trials, key=lambda t: t.number):
        found = trial.state == "succeeded" and trial.value is not None
        if found and (best is None or better(trial.value or 0.0, best.value, DIRECTIONS[metric])):
            best = trial
    return best


# --- strategies: each proposes the next trial's parameters and hears how it did ---------------------------


class Sampler:
    """`ask` the parameters of trial `number`; `tell` its value (None when it failed or was cancelled)."""

    def ask(self, number: int) -> Params:
        raise NotImplementedError

    def tell(self, number: int, value: float | None) -> None:
        """Random and grid searches do not learn from results."""


class GridSampler(Sampler):
    def __init__(self, space: dict[str, SearchDimension]) -> None:
        names = list(space)
        self.points: Iterator[tuple[Any, ...]] = itertools.product(*(_grid_values(space[n]) for n in names))
        self.names = names

    def ask(self, number: int) -> Params:
        return dict(zip(self.names, next(self.points), strict=True))


class RandomSampler(Sampler):
    """Independent draws, seeded; a combination already tried is drawn again (a few times at most)."""

    def __init__(self, space: dict[str, SearchDimension], seed: int) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.tried: set[str] = set()

    def ask(self, number: int) -> Params:
        for _ in range(REDRAWS):
            params = {name: self._draw(d) for name, d in self.space.items()}
            if repr(params) not in self.tried:
                break
        self.tried.add(repr(params))
        return params

    def _draw(self, dimension: SearchDimension) -> Any:
        if dimension.choice is not None:
            return dimension.choice[int(self.rng.integers(len(dimension.choice)))]
        if dimension.int_range is not None:
            low, high = dimension.int_range
            if dimension.log:  # log-uniform over [low, high + 1), floored: each integer gets its share
                drawn = math.exp(self.rng.uniform(math.log(low), math.log(high + 1)))
                return min(int(drawn), high)
            return int(self.rng.integers(low, high + 1))
        assert dimension.float_range is not None
        low_f, high_f = dimension.float_range
        if dimension.log:
            return float(math.exp(self.rng.uniform(math.log(low_f), math.log(high_f))))
        return float(self.rng.uniform(low_f, high_f))


class TpeSampler(Sampler):
    """Optuna's TPE through ask-and-tell on an in-memory study (the trials run on Dask, not in Optuna)."""

    def __init__(self, space: dict[str, SearchDimension], seed: int, direction: Direction) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.distributions = {name: _distribution(optuna, d) for name, d in space.items()}
        # constant_liar: trials still running count as poor guesses, so parallel asks spread out
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        self.study = optuna.create_study(direction=direction, sampler=sampler)
        self.asked: dict[int, Any] = {}

    def ask(self, number: int) -> Params:
        trial = self.study.ask(self.distributions)
        self.asked[number] = trial
        return dict(trial.params)

    def tell(self, number: int, value: float | None) -> None:
        trial = self.asked.pop(number)
        if value is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)


def _distribution(optuna: Any, dimension: SearchDimension) -> Any:
    if dimension.choice is not None:
        return optuna.distributions.CategoricalDistribution(dimension.choice)
    if dimension.int_range is not None:
        return optuna.distributions.IntDistribution(*dimension.int_range, log=dimension.log)
    assert dimension.float_range is not None
    return optuna.distributions.FloatDistribution(*dimension.float_range, log=dimension.log)


def sampler_for(search: SearchSpec) -> Sampler:
    if search.strategy == "grid":
        return GridSampler(search.space)
    if search.strategy == "tpe":
        return TpeSampler(search.space, search.seed, DIRECTIONS[search.metric or "f1"])
    return RandomSampler(search.space, search.seed)
