"""The training job store on every database backend: records round-trip, states only move forward."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.errors import NotFound
from mlplatform.formats.base import Task
from mlplatform.ids import new_id
from mlplatform.settings import DatabaseSettings
from mlplatform.training.schemas import (
    JobProgress,
    SearchSpec,
    TrainingJobRead,
    TrainingTrialRead,
    ValidationSpec,
)
from mlplatform.training.sql_store import SqlTrainingJobStore


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlTrainingJobStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlTrainingJobStore(database)
    await database.dispose()


def job(model: str = "churn", minutes: int = 0, **extra: Any) -> TrainingJobRead:
    values: dict[str, Any] = {
        "id": new_id(),
        "model": model,
        "dataset": new_id(),
        "target": "label",
        "features": ["age", "income"],
        "task": Task.CLASSIFICATION,
        "algorithm": "xgboost",
        "hyperparameters": {"n_estimators": 10, "max_depth": 3},
        "validation": ValidationSpec(fraction=0.25),
        "parent": "churn@production",
        "tags": {"team": "risk"},
        "state": "queued",
        "created_at": utcnow() + timedelta(minutes=minutes),
        "created_by": "ada (k1)",
    }
    values.update(extra)
    return TrainingJobRead.model_validate(values)


async def test_a_job_round_trips_exactly(store: SqlTrainingJobStore) -> None:
    created = job()
    await store.create(created)
    assert await store.get(created.id) == created


async def test_unknown_ids_raise_not_found(store: SqlTrainingJobStore) -> None:
    with pytest.raises(NotFound):
        await store.get("nope")
    with pytest.raises(NotFound):
        await store.start("nope", worker=None, at=utcnow())
    with pytest.raises(NotFound):
        await store.request_cancel("nope")


async def test_a_job_runs_reports_and_succeeds_once(store: SqlTrainingJobStore) -> None:
    created = job()
    await store.create(created)
    assert await store.report(created.id, JobProgress(fraction=0.1), worker=None, at=utcnow()) is False
    assert await store.start(created.id, worker="tcp://127.0.0.1:1", at=utcnow())
    assert not await store.start(created.id, worker="tcp://127.0.0.1:1", at=utcnow())
    progress = JobProgress(fraction=0.5, current=5, total=10, unit="round", metric_name="logloss", metric=0.3)
    assert await store.report(created.id, progress, worker=None, at=utcnow())
    running = await store.get(created.id)
    assert (running.state, running.attempt, running.progress) == ("running", 1, progress)
    assert running.worker == "tcp://127.0.0.1:1" and running.heartbeat_at is not None
    metrics = {"accuracy": 0.9, "log_loss": 0.25}
    assert await store.finish(created.id, "succeeded", at=utcnow(), metrics=metrics, version_id="churn-v1-x")
    assert not await store.finish(created.id, "failed", at=utcnow(), error="late")
    done = await store.get(created.id)
    assert (done.state, done.metrics, done.version_id) == ("succeeded", metrics, "churn-v1-x")
    assert done.error is None
    assert done.finished_at is not None


async def test_a_queued_job_can_be_cancelled_and_then_never_starts(store: SqlTrainingJobStore) -> None:
    created = job()
    await store.create(created)
    assert (await store.request_cancel(created.id)).cancel_requested
    assert await store.finish(created.id, "cancelled", at=utcnow())
    assert not await store.start(created.id, worker=None, at=utcnow())
    assert (await store.get(created.id)).state == "cancelled"


async def test_listings_filter_by_model_and_state_and_page_newest_first(store: SqlTrainingJobStore) -> None:
    jobs = [job("a", 1), job("b", 2), job("a", 3)]
    for item in jobs:
        await store.create(item)
    await store.finish(jobs[0].id, "failed", at=utcnow(), error="boom")
    page = await store.list_jobs(model="a", state=None, limit=1, offset=0)
    assert (page.total, [j.id for j in page.items]) == (2, [jobs[2].id])
    failed = await store.list_jobs(model=None, state="failed", limit=10, offset=0)
    assert [j.id for j in failed.items] == [jobs[0].id] and failed.items[0].error == "boom"
    everything = await store.list_jobs(model=None, state=None, limit=10, offset=1)
    assert everything.total == 3 and [j.id for j in everything.items] == [jobs[1].id, jobs[0].id]


def trial(number: int, **extra: Any) -> TrainingTrialRead:
    values: dict[str, Any] = {
        "number": number,
        "params": {"max_depth": number + 2, "booster": "dart", "gamma": None},
        "state": "succeeded",
        "metrics": {"f1": 0.5 + number / 10, "accuracy": 0.75},
        "value": 0.5 + number / 10,
        "worker": "tcp://127.0.0.1:9",
        "started_at": utcnow(),
        "finished_at": utcnow() + timedelta(seconds=2),
        "duration_seconds": 2.0,
    }
    values.update(extra)
    return TrainingTrialRead.model_validate(values)


async def test_a_search_job_keeps_its_search(store: SqlTrainingJobStore) -> None:
    search = SearchSpec.model_validate(
        {
            "strategy": "tpe",
            "space": {
                "max_depth": {"int": [2, 8]},
                "learning_rate": {"float": [0.01, 0.3], "log": True},
                "booster": {"choice": ["gbtree", "dart", None]},
            },
            "trials": 30,
            "metric": "roc_auc",
            "parallel": 4,
            "seed": 7,
        }
    )
    created = job(search=search)
    await store.create(created)
    assert (await store.get(created.id)).search == search
    plain = job()
    await store.create(plain)
    assert (await store.get(plain.id)).search is None


async def test_trials_are_recorded_under_their_job_by_number_and_replaced_when_recorded_again(
    store: SqlTrainingJobStore,
) -> None:
    created, other = job(), job()
    await store.create(created)
    await store.create(other)
    assert await store.list_trials(created.id) == []
    first, second, third = trial(0), trial(1, state="failed", metrics={}, value=None, error="bad"), trial(2)
    await store.record_trials(created.id, [third, second])
    await store.record_trials(created.id, [first])
    await store.record_trials(other.id, [trial(0, value=0.1)])
    assert await store.list_trials(created.id) == [first, second, third]
    assert third.params == {"max_depth": 4, "booster": "dart", "gamma": None}
    cancelled = trial(2, state="cancelled", metrics={}, value=None)
    await store.record_trials(created.id, [cancelled])
    assert (await store.list_trials(created.id))[2] == cancelled
    assert [t.value for t in await store.list_trials(other.id)] == [0.1]


async def test_trials_of_an_unknown_job_raise_not_found(store: SqlTrainingJobStore) -> None:
    with pytest.raises(NotFound):
        await store.list_trials("nope")
    with pytest.raises(NotFound):
        await store.record_trials("nope", [trial(0)])


async def test_of_two_instances_claiming_a_queued_job_exactly_one_wins(store: SqlTrainingJobStore) -> None:
    created = job()
    await store.create(created)
    now = utcnow()
    lease = now + timedelta(seconds=30)
    claims = await asyncio.gather(
        *(store.claim(created.id, owner=f"instance-{i}", at=now, lease_until=lease) for i in range(2))
    )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    claimed = winners[0]
    assert (claimed.state, claimed.attempt, claimed.lease_expires_at) == ("running", 1, lease)
    loser = "instance-1" if claimed.lease_owner == "instance-0" else "instance-0"
    assert await store.claim(created.id, owner=loser, at=now, lease_until=lease) is None
    assert (await store.get(created.id)).lease_owner == claimed.lease_owner


async def test_only_the_lease_holder_reports_retries_and_finishes(store: SqlTrainingJobStore) -> None:
    created = job()
    await store.create(created)
    now = utcnow()
    assert await store.claim(created.id, owner="a", at=now, lease_until=now + timedelta(seconds=30))
    progress = JobProgress(fraction=0.3, current=3, total=10, unit="round")
    later = now + timedelta(seconds=20)
    assert not await store.report(created.id, progress, worker=None, at=later, owner="b", lease_until=later)
    renewed = now + timedelta(seconds=60)
    assert await store.report(
        created.id, progress, worker="tcp://w:1", at=later, owner="a", lease_until=renewed, resumed_from=25
    )
    running = await store.get(created.id)
    assert (running.progress, running.lease_expires_at, running.resumed_from) == (progress, renewed, 25)
    assert await store.retry(created.id, owner="b", at=later, error="x") is None
    assert await store.retry(created.id, owner="a", at=later, error="worker tcp://w:1 died") == 2
    retried = await store.get(created.id)
    assert (retried.attempt, retried.error, retried.resumed_from) == (2, "worker tcp://w:1 died", None)
    assert not await store.finish(created.id, "succeeded", at=later, owner="b")
    assert await store.finish(created.id, "succeeded", at=later, owner="a", version_id="churn-v1-x")
    done = await store.get(created.id)
    assert (done.state, done.error, done.lease_owner) == ("succeeded", None, None)
    assert done.lease_expires_at is None
    assert await store.claim(created.id, owner="b", at=later, lease_until=renewed) is None


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_locked_out(
    store: SqlTrainingJobStore,
) -> None:
    created = job()
    await store.create(created)
    now = utcnow()
    first = await store.claim(created.id, owner="a", at=now, lease_until=now + timedelta(seconds=5))
    assert first is not None and first.started_at == now
    early = now + timedelta(seconds=4)
    assert await store.stale(at=early, queued_before=now) == []
    assert await store.claim(created.id, owner="b", at=early, lease_until=early) is None
    expired = now + timedelta(seconds=6)
    assert await store.stale(at=expired, queued_before=now) == [created.id]
    taken = await store.claim(created.id, owner="b", at=expired, lease_until=expired + timedelta(seconds=30))
    assert taken is not None and (taken.lease_owner, taken.attempt) == ("b", 2)
    assert taken.started_at == now  # the job's start, not the run's
    assert await store.stale(at=expired, queued_before=now) == []
    assert not await store.report(created.id, taken.progress, worker=None, at=expired, owner="a")
    assert not await store.release(created.id, owner="a")
    assert not await store.finish(created.id, "failed", at=expired, owner="a", error="late")
    assert (await store.get(created.id)).state == "running"


async def test_a_released_job_is_resumed_under_the_same_attempt_number(store: SqlTrainingJobStore) -> None:
    created = job()
    await store.create(created)
    now = utcnow()
    lease = now + timedelta(seconds=30)
    assert await store.claim(created.id, owner="a", at=now, lease_until=lease)
    assert await store.release(created.id, owner="a")
    released = await store.get(created.id)
    assert (released.state, released.lease_owner, released.attempt) == ("running", None, 0)
    assert await store.stale(at=now, queued_before=now) == [created.id]
    resumed = await store.claim(created.id, owner="b", at=now, lease_until=lease)
    assert resumed is not None and (resumed.attempt, resumed.lease_owner) == (1, "b")


async def test_stale_lists_queued_jobs_nobody_claimed_and_never_finished_ones(
    store: SqlTrainingJobStore,
) -> None:
    old, new, done = job(minutes=-10), job(), job(minutes=-20)
    for item in (old, new, done):
        await store.create(item)
    await store.finish(done.id, "cancelled", at=utcnow())
    now = utcnow()
    assert await store.stale(at=now, queued_before=now - timedelta(minutes=1)) == [old.id]
    assert await store.stale(at=now, queued_before=now + timedelta(minutes=1), limit=1) == [old.id]
