"""The drift store on every database backend: references replace and round-trip, reports page newest first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import numpy as np
import pytest

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.errors import NotFound
from mlplatform.ids import new_id
from mlplatform.monitoring.drift import ReferenceProfile, compare
from mlplatform.monitoring.schemas import DriftReportRead, DriftReportSummary, FeatureDriftRead
from mlplatform.monitoring.sql_store import SqlDriftStore
from mlplatform.monitoring.store import StoredReference
from mlplatform.settings import DatabaseSettings


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlDriftStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlDriftStore(database)
    await database.dispose()


def columns(seed: int, shift: float = 0.0) -> dict[str, list[object]]:
    rng = np.random.default_rng(seed)
    return {
        "age": (rng.normal(40, 10, 500) + shift).tolist(),
        "city": rng.choice(["paris", "oslo", "rome"], 500).tolist(),
    }


def profile() -> dict[str, object]:
    return ReferenceProfile.from_columns(columns(0), {"age": "numeric", "city": "categorical"}).to_dict()


def reference(version_id: str, **extra: object) -> StoredReference:
    values: dict[str, object] = {
        "version_id": version_id,
        "model": "churn",
        "version": 1,
        "source": "upload",
        "dataset_id": None,
        "rows": 500,
        "source_rows": 2_000,
        "profile": profile(),
        "created_at": utcnow(),
        "created_by": "ada (k1)",
    }
    values.update(extra)
    return StoredReference(**values)  # type: ignore[arg-type]


def report(version: int = 1, minutes: int = 0, shift: float = 0.0, model: str = "churn") -> DriftReportRead:
    found = compare(ReferenceProfile.from_dict(profile()), columns(1, shift)).to_dict()
    now = utcnow() + timedelta(minutes=minutes)
    return DriftReportRead(
        id=new_id(),
        model=model,
        version=version,
        version_id=f"{model}-v{version}-20260101000000",
        start=now - timedelta(hours=24),
        end=now,
        trigger="scheduled",
        created_at=now,
        status=found["status"],
        drift=found["drift"],
        drifted_features=found["drifted_features"],
        alpha=found["alpha"],
        tests=found["tests"],
        sampled_rows=500,
        reference_rows=500,
        features=[FeatureDriftRead.model_validate(f) for f in found["features"]],
    )


async def test_a_reference_round_trips_and_a_second_put_replaces_it(store: SqlDriftStore) -> None:
    assert await store.get_reference("churn-v1-20260101000000") is None
    first = reference("churn-v1-20260101000000")
    await store.put_reference(first)
    assert await store.get_reference(first.version_id) == first
    assert ReferenceProfile.from_dict(first.profile) == ReferenceProfile.from_dict(profile())

    second = reference(first.version_id, source="dataset", dataset_id=new_id(), rows=10, profile={"x": [1]})
    await store.put_reference(second)
    assert await store.get_reference(first.version_id) == second
    assert await store.get_reference("churn-v2-20260101000000") is None


async def test_concurrent_puts_of_one_version_leave_one_whole(store: SqlDriftStore) -> None:
    version_id = "churn-v1-20260101000000"
    puts = [reference(version_id, rows=n, created_by=f"actor {n}") for n in range(10, 16)]
    await asyncio.gather(*(store.put_reference(p) for p in puts))
    assert await store.get_reference(version_id) in puts


async def test_a_report_round_trips_whole_with_its_histograms(store: SqlDriftStore) -> None:
    drifted = report(shift=20.0)
    assert drifted.drift and drifted.drifted_features == ["age"]
    await store.add_report(drifted)
    found = await store.get_report(model="churn", report_id=drifted.id)
    assert found == drifted
    age = found.features[0]
    assert age.histogram is not None and age.histogram.edges and sum(age.histogram.current) == 500
    with pytest.raises(NotFound):
        await store.get_report(model="other", report_id=drifted.id)
    with pytest.raises(NotFound):
        await store.get_report(model="churn", report_id=new_id())


async def test_reports_page_newest_first_by_model_and_version(store: SqlDriftStore) -> None:
    made = [report(version=1 + i % 2, minutes=i) for i in range(5)]
    for item in reversed(made):
        await store.add_report(item)
    await store.add_report(report(model="other", minutes=10))

    items, total = await store.list_reports(model="churn", version=None, limit=2, offset=1)
    assert total == 5
    assert [i.id for i in items] == [made[3].id, made[2].id]
    assert not hasattr(items[0], "features")
    items, total = await store.list_reports(model="churn", version=2, limit=10, offset=0)
    assert total == 2 and [i.id for i in items] == [made[3].id, made[1].id]

    latest = await store.latest_report(model="churn", version_id=None)
    assert latest is not None and latest.id == made[4].id and latest.features
    by_version = await store.latest_report(model="churn", version_id=made[1].version_id)
    assert by_version is not None and by_version.id == made[3].id
    assert await store.latest_report(model="nobody", version_id=None) is None

    summaries = await store.latest_summaries(["churn", "other", "nobody"])
    assert set(summaries) == {"churn", "other"}
    assert summaries["churn"].id == made[4].id and not hasattr(summaries["churn"], "features")
    assert summaries["churn"] == DriftReportSummary.model_validate(made[4].model_dump(exclude={"features"}))
    assert await store.latest_summaries([]) == {}
