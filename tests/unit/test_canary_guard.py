"""Canary guards: a failing or slower canary is caught, an equal one left alone (checked by simulation)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from mlplatform.clock import utcnow
from mlplatform.experiments.canary import guard, next_move
from mlplatform.experiments.results import ArmInput
from mlplatform.experiments.schemas import CanarySpec, ExperimentRead, VariantRead

SPEC = CanarySpec(steps=[10, 50, 100], step_min_samples=100, step_min_seconds=60, max_degradation=0.1)


def experiment(metric: str = "error_rate", step: int = 0) -> ExperimentRead:
    now = utcnow()
    return ExperimentRead(
        id="01JCANARY",
        name="c",
        model="m",
        type="canary",
        state="running",
        variants=[
            VariantRead(name="base", version="m-v1-x", weight=90),
            VariantRead(name="new", version="m-v2-x", weight=10),
        ],
        sticky="request_id",
        metric=metric,  # type: ignore[arg-type]
        min_samples=100,
        min_effect=None,
        alpha=0.05,
        max_duration_seconds=None,
        canary=SPEC,
        step=step,
        step_started_at=now,
        created_at=now,
        created_by="t",
    )


def arm(
    name: str,
    requests: int = 0,
    errors: int = 0,
    latencies: list[float] | None = None,
    predicted: list[int] | None = None,
    actual: list[int] | None = None,
) -> ArmInput:
    return ArmInput(
        variant=VariantRead(name=name, version=f"m-{name}", weight=50),
        requests=requests,
        errors=errors,
        latencies=latencies or [],
        recent=[],
        predicted=predicted or [],
        actual=actual or [],
    )


def test_a_canary_failing_every_request_is_caught_after_a_few_dozen() -> None:
    assert guard(experiment(), arm("base", 900, 0), arm("new", 10, 10)) is None  # too few yet
    reason = guard(experiment(), arm("base", 2000, 2), arm("new", 40, 40))
    assert reason is not None and "error_rate" in reason


def test_a_slower_canary_is_caught_and_a_similar_one_is_not() -> None:
    rng = np.random.default_rng(3)
    base = rng.gamma(4, 1.0, 2000).tolist()
    slow = (rng.gamma(4, 1.0, 300) * 2).tolist()
    same = rng.gamma(4, 1.0, 300).tolist()
    reason = guard(experiment(), arm("base", 2000, latencies=base), arm("new", 300, latencies=slow))
    assert reason is not None and "p95 latency" in reason
    assert guard(experiment(), arm("base", 2000, latencies=base), arm("new", 300, latencies=same)) is None


def test_a_worse_label_metric_rolls_back() -> None:
    truth = [1] * 400
    reason = guard(
        experiment("accuracy"),
        arm("base", 400, predicted=truth, actual=truth),
        arm("new", 400, predicted=[1] * 200 + [0] * 200, actual=truth),
    )
    assert reason is not None and "accuracy" in reason


def test_an_equal_canary_is_rarely_rolled_back_however_often_it_is_checked() -> None:
    rng = np.random.default_rng(8)
    runs, rolled = 300, 0
    for _ in range(runs):
        base_errors = np.cumsum(rng.random(5000) < 0.02)
        new_errors = np.cumsum(rng.random(1000) < 0.02)
        for look in range(1, 21):  # checked every 50 canary requests
            n_new, n_base = 50 * look, 250 * look
            fired = guard(
                experiment(),
                arm("base", n_base, int(base_errors[n_base - 1])),
                arm("new", n_new, int(new_errors[n_new - 1])),
            )
            if fired:
                rolled += 1
                break
    assert rolled / runs <= 0.05 + 3 * (0.05 * 0.95 / runs) ** 0.5, rolled


def test_steps_wait_for_samples_and_time_then_move_then_promote() -> None:
    now = utcnow()
    assert next_move(experiment(), 50, now + timedelta(seconds=120)).action == "wait"
    assert next_move(experiment(), 150, now + timedelta(seconds=30)).action == "wait"
    assert next_move(experiment(), 150, now + timedelta(seconds=61)).action == "step"
    assert next_move(experiment(step=2), 150, now + timedelta(seconds=61)).action == "promote"
