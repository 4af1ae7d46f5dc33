"""The experiment store on every database backend: round trips, one running per model, conditional ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.errors import Conflict, NotFound
from mlplatform.experiments.schemas import CanarySpec, ExperimentRead, VariantRead
from mlplatform.experiments.sql_store import SqlExperimentStore
from mlplatform.experiments.store import Tally
from mlplatform.ids import new_id
from mlplatform.settings import DatabaseSettings


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlExperimentStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlExperimentStore(database)
    await database.dispose()


def experiment(model: str = "churn", minutes: int = 0, **extra: Any) -> ExperimentRead:
    at = utcnow() + timedelta(minutes=minutes)
    values: dict[str, Any] = {
        "id": new_id(),
        "name": "trees",
        "model": model,
        "type": "canary",
        "state": "running",
        "variants": [
            VariantRead(name="stable", version=f"{model}-v1-20261204000000", weight=95),
            VariantRead(name="next", version=f"{model}-v2-20261204000000", weight=5),
        ],
        "sticky": "header:x-user",
        "metric": "accuracy",
        "min_samples": 500,
        "min_effect": 0.02,
        "alpha": 0.01,
        "max_duration_seconds": 86400.0,
        "canary": CanarySpec(
            steps=[5, 50, 100], step_min_samples=10, step_min_seconds=5, max_degradation=0.2
        ),
        "step_started_at": at,
        "created_at": at,
        "created_by": "ada (k1)",
    }
    values.update(extra)
    return ExperimentRead.model_validate(values)


async def test_an_experiment_round_trips_exactly(store: SqlExperimentStore) -> None:
    created = experiment()
    await store.create(created)
    assert await store.get(created.id) == created
    with pytest.raises(NotFound):
        await store.get("nope")


async def test_one_running_experiment_per_model_even_when_two_start_at_once(
    store: SqlExperimentStore,
) -> None:
    results = await asyncio.gather(
        store.create(experiment()), store.create(experiment()), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "NoneType"]
    await store.create(experiment(model="other"))  # another model may run one
    running = await store.running()
    assert sorted(e.model for e in running) == ["churn", "other"]
    (current,) = await store.running("churn")
    assert await store.end(current.id, "stopped", at=utcnow(), by="ada", reason="enough")
    await store.create(experiment())  # once it ended, the model may start another
    with pytest.raises(Conflict):
        await store.create(experiment())


async def test_steps_and_ends_are_conditional(store: SqlExperimentStore) -> None:
    created = experiment()
    await store.create(created)
    at = utcnow()
    weights = [v.model_copy(update={"weight": w}) for v, w in zip(created.variants, (50, 50), strict=True)]
    assert await store.set_weights(created.id, weights, step=1, at=at)
    assert not await store.set_weights(created.id, weights, step=1, at=at)  # a second instance's late step
    stepped = await store.get(created.id)
    assert (stepped.step, [v.weight for v in stepped.variants], stepped.step_started_at) == (1, [50, 50], at)
    back = [v.model_copy(update={"weight": w}) for v, w in zip(created.variants, (100, 0), strict=True)]
    assert await store.end(created.id, "rolled_back", at=at, by="supervisor", reason="slow", variants=back)
    assert not await store.end(created.id, "promoted", at=at, by="ada", winner="next")
    ended = await store.get(created.id)
    assert (ended.state, ended.reason, ended.winner, ended.ended_by) == (
        "rolled_back",
        "slow",
        None,
        "supervisor",
    )
    assert [v.weight for v in ended.variants] == [100, 0]
    assert not await store.set_weights(created.id, weights, step=2, at=at)
    with pytest.raises(NotFound):
        await store.end("nope", "stopped", at=at, by="ada")


async def test_listings_are_newest_first_filtered_and_counted(store: SqlExperimentStore) -> None:
    old, new = experiment(minutes=-5), experiment(model="other")
    await store.create(old)
    await store.create(new)
    await store.end(old.id, "promoted", at=utcnow(), by="ada", winner="next")
    page = await store.list_experiments(model=None, state=None, limit=10, offset=0)
    assert [e.id for e in page.items] == [new.id, old.id] and page.total == 2
    promoted = await store.list_experiments(model=None, state="promoted", limit=10, offset=0)
    assert [e.id for e in promoted.items] == [old.id]
    assert (await store.list_experiments(model="other", state=None, limit=1, offset=0)).total == 1


async def test_each_instance_saves_its_own_tallies_and_a_save_replaces_its_earlier_one(
    store: SqlExperimentStore,
) -> None:
    created = experiment()
    await store.create(created)
    now = utcnow()
    await store.save_tallies("a", {(created.id, "stable"): Tally(requests=5, errors=1)}, at=now)
    await store.save_tallies(
        "b",
        {
            (created.id, "stable"): Tally(requests=3),
            (created.id, "next"): Tally(compared=4, agreed=3, difference_sum=0.5, numeric=4),
            ("another-experiment", "stable"): Tally(requests=99),
        },
        at=now,
    )
    await store.save_tallies("a", {(created.id, "stable"): Tally(requests=7, errors=2)}, at=now)
    await store.save_tallies("a", {}, at=now)  # nothing changed: nothing written
    assert await store.tallies(created.id) == {
        ("stable", "a"): Tally(requests=7, errors=2),
        ("stable", "b"): Tally(requests=3),
        ("next", "b"): Tally(compared=4, agreed=3, difference_sum=0.5, numeric=4),
    }
    assert await store.tallies(new_id()) == {}
