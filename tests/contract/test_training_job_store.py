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
from mlplatform.training.schemas import JobProgress, TrainingJobRead, ValidationSpec
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
