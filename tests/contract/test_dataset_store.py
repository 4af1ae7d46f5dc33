"""The dataset store on every database backend: records round-trip, listings page newest first, deletes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.datasets.schemas import ColumnRead, DatasetRead
from mlplatform.datasets.sql_store import SqlDatasetStore
from mlplatform.errors import NotFound
from mlplatform.ids import new_id
from mlplatform.settings import DatabaseSettings

COLUMNS = [
    ColumnRead(name="age", type="int64", nulls=0, min=18, max=90, mean=41.5),
    ColumnRead(name="income", type="double", nulls=2, min=0.5, max=1e9, mean=52000.25),
    ColumnRead(name="city", type="string", nulls=1),
]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlDatasetStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlDatasetStore(database)
    await database.dispose()


def dataset(name: str, minutes: int = 0, **extra: object) -> DatasetRead:
    dataset_id = new_id()
    values: dict[str, object] = {
        "id": dataset_id,
        "name": name,
        "format": "csv",
        "size_bytes": 3_000_000_000,  # past 32 bits
        "sha256": "ab" * 32,
        "rows": 5_000_000_000,
        "columns": COLUMNS,
        "storage_key": f"datasets/{name}/{dataset_id}/data.csv",
        "description": "",
        "tags": {},
        "created_at": utcnow() + timedelta(minutes=minutes),
        "created_by": "ada (k1)",
    }
    values.update(extra)
    return DatasetRead.model_validate(values)


async def test_a_record_round_trips_exactly(store: SqlDatasetStore) -> None:
    created = dataset("churn", format="parquet", description="weekly export", tags={"team": "risk"})
    await store.create(created)
    found = await store.get(created.id)
    assert found == created
    assert found.columns[0].min == 18 and isinstance(found.columns[0].min, int)
    assert found.created_at.tzinfo is not None


async def test_listings_are_newest_first_filter_by_name_and_page(store: SqlDatasetStore) -> None:
    made = [dataset(name, minutes) for minutes, name in enumerate(["a", "b", "a", "a.b", "a"])]
    for each in made:
        await store.create(each)
    everything = await store.list_datasets(None, 100, 0)
    assert everything.total == 5
    assert [d.id for d in everything.items] == [d.id for d in reversed(made)]
    named = await store.list_datasets("a", 2, 1)
    assert named.total == 3 and (named.limit, named.offset) == (2, 1)
    assert [d.id for d in named.items] == [made[2].id, made[0].id]
    assert (await store.list_datasets("a%", 10, 0)).total == 0  # exact names, no patterns
    assert (await store.list_datasets("nothing", 10, 0)).items == []


async def test_delete_returns_the_key_and_forgets_the_record(store: SqlDatasetStore) -> None:
    kept, gone = dataset("kept"), dataset("gone")
    await store.create(kept)
    await store.create(gone)
    assert await store.storage_keys() == {kept.storage_key, gone.storage_key}
    assert await store.delete(gone.id) == gone.storage_key
    assert await store.storage_keys() == {kept.storage_key}
    with pytest.raises(NotFound):
        await store.get(gone.id)
    with pytest.raises(NotFound):
        await store.delete(gone.id)
    assert (await store.list_datasets(None, 10, 0)).total == 1


async def test_unknown_ids_are_not_found(store: SqlDatasetStore) -> None:
    with pytest.raises(NotFound, match="no dataset"):
        await store.get("0" * 26)
    with pytest.raises(NotFound):
        await store.get("../../etc/passwd")
