"""The registry store on every database backend: numbering, aliases, history, archive, purge."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.errors import NotFound
from mlplatform.formats.base import ArtifactFormat, Feature, Framework, ModelDescription, Task
from mlplatform.registry.refs import parse_ref
from mlplatform.registry.snapshot import resolve
from mlplatform.registry.sql_store import SqlRegistryStore
from mlplatform.registry.store import ModelFilter, NewVersion
from mlplatform.settings import DatabaseSettings

DESCRIPTION = ModelDescription(
    framework=Framework.SKLEARN,
    format=ArtifactFormat.SKOPS,
    flavour="sklearn.linear_model.LogisticRegression",
    task=Task.CLASSIFICATION,
    features=(Feature("age"), Feature("income")),
    classes=(0, 1),
    outputs={"prediction": {"type": "int"}},
    library_version="1.5",
    file_name="model.skops",
)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlRegistryStore]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield SqlRegistryStore(database)
    await database.dispose()


def new(name: str, key: str = "k", framework: Framework = Framework.SKLEARN, **extra: object) -> NewVersion:
    description = dataclasses.replace(DESCRIPTION, framework=framework)
    values: dict[str, object] = {
        "name": name,
        "actor": "ada",
        "at": utcnow(),
        "description": description,
        "artifact_key": f"models/{name}/{key}/model.skops",
        "artifact_size": 10,
        "artifact_sha256": "0" * 64,
    }
    values.update(extra)
    return NewVersion(**values)  # type: ignore[arg-type]


async def test_versions_are_numbered_from_one_with_the_id_format(store: SqlRegistryStore) -> None:
    first = await store.create_version(new("churn"))
    second = await store.create_version(new("churn", "b"))
    assert (first.version, second.version) == (1, 2)
    assert first.id.startswith("churn-v1-") and len(first.id) == len("churn-v1-") + 14
    assert first.features[0].name == "age" and first.classes == [0, 1]


async def test_concurrent_registrations_get_distinct_gap_free_numbers(store: SqlRegistryStore) -> None:
    created = await asyncio.gather(*(store.create_version(new("fraud", str(i))) for i in range(12)))
    assert sorted(v.version for v in created) == list(range(1, 13))


async def test_aliases_resolve_and_history_answers_which_version_at_time_t(store: SqlRegistryStore) -> None:
    for i in range(3):
        await store.create_version(new("m", str(i)))
    t0 = utcnow()
    await store.set_alias("m", "production", 1, "ada", t0)
    t1 = t0 + timedelta(minutes=5)
    await store.set_alias("m", "production", 2, "bob", t1)
    await store.set_alias("m", "champion", 3, "bob", t1)
    entry = await store.entry("m")
    assert resolve(parse_ref("m"), entry).version == 2
    assert resolve(parse_ref("m@champion"), entry).version == 3
    assert resolve(parse_ref("m/1"), entry).version == 1
    assert (await store.aliases_at("m", t0 + timedelta(minutes=1))).aliases == {"production": 1}
    assert (await store.aliases_at("m", t1)).aliases == {"production": 2, "champion": 3}
    assert (await store.aliases_at("m", t0 - timedelta(seconds=1))).aliases == {}
    history = (await store.history("m", 100, 0)).items
    assert [(h.action, h.alias, h.from_version, h.to_version) for h in history[:2]] == [
        ("alias_set", "champion", None, 3),
        ("alias_set", "production", 1, 2),
    ]
    assert history[0].actor == "bob"


async def test_default_is_production_else_newest_ready(store: SqlRegistryStore) -> None:
    await store.create_version(new("d", "1"))
    await store.create_version(new("d", "2"))
    assert resolve(parse_ref("d"), await store.entry("d")).version == 2
    await store.archive("d", 2, "ada", utcnow())
    assert resolve(parse_ref("d"), await store.entry("d")).version == 1
    await store.set_alias("d", "production", 1, "ada", utcnow())
    assert (await store.get_model("d")).default_version == 1


async def test_archiving_removes_aliases_and_is_recorded(store: SqlRegistryStore) -> None:
    await store.create_version(new("a"))
    await store.set_alias("a", "staging", 1, "ada", utcnow())
    await store.archive("a", 1, "ada", utcnow())
    entry = await store.entry("a")
    assert entry is not None and entry.aliases == {} and entry.versions[1].status == "archived"
    actions = [h.action for h in (await store.history("a", 10, 0)).items]
    assert actions[:2] == ["archived", "alias_removed"]
    with pytest.raises(NotFound, match="no ready version"):
        resolve(parse_ref("a"), entry)


async def test_purge_returns_the_keys_and_keeps_the_history(store: SqlRegistryStore) -> None:
    await store.create_version(new("p", "x", reference_key="models/p/x/reference.npy"))
    await store.create_version(new("p", "y"))
    keys = await store.purge_version("p", 1, "ada", utcnow())
    assert keys == ["models/p/x/model.skops", "models/p/x/reference.npy"]
    assert await store.storage_keys() == {"models/p/y/model.skops"}
    assert await store.purge_model("p", "ada", utcnow()) == ["models/p/y/model.skops"]
    assert await store.entry("p") is None
    assert (await store.history("p", 10, 0)).items[0].action == "purged"
    with pytest.raises(NotFound):
        await store.get_model("p")


async def test_lists_filter_and_paginate(store: SqlRegistryStore) -> None:
    for name in ("fraud-a", "fraud-b", "churn_x"):
        await store.create_version(new(name))
    await store.create_version(new("xgb-model", framework=Framework.XGBOOST))
    await store.update_model("fraud-b", description="b", tags={"team": "risk"})
    await store.set_alias("fraud-a", "production", 1, "ada", utcnow())
    names = lambda page: [m.name for m in page.items]  # noqa: E731
    assert names(await store.list_models(ModelFilter(prefix="fraud"), 10, 0)) == ["fraud-a", "fraud-b"]
    assert names(await store.list_models(ModelFilter(prefix="churn_"), 10, 0)) == ["churn_x"]
    assert names(await store.list_models(ModelFilter(stage="production"), 10, 0)) == ["fraud-a"]
    assert names(await store.list_models(ModelFilter(tag=("team", "risk")), 10, 0)) == ["fraud-b"]
    assert names(await store.list_models(ModelFilter(framework="xgboost"), 10, 0)) == ["xgb-model"]
    page = await store.list_models(ModelFilter(), 2, 1)
    assert page.total == 4 and names(page) == ["fraud-a", "fraud-b"]
    assert (await store.get_model("fraud-b")).tags == {"team": "risk"}


async def test_unknown_things_are_not_found(store: SqlRegistryStore) -> None:
    with pytest.raises(NotFound):
        await store.get_version("nope", 1)
    await store.create_version(new("known"))
    with pytest.raises(NotFound):
        await store.get_version("known", 2)
    with pytest.raises(NotFound):
        await store.set_alias("known", "x", 9, "ada", utcnow())
    with pytest.raises(NotFound):
        resolve(parse_ref("known@nope"), await store.entry("known"))
