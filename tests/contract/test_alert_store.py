"""The alert store and the check lease store on every database backend: rules, dedup of open alerts (also
under concurrent writers), acknowledge, resolve, listing; one claim per interval among concurrent callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mlplatform import db
from mlplatform.clock import utcnow
from mlplatform.errors import Conflict, NotFound
from mlplatform.ids import new_id
from mlplatform.monitoring.alerts.schemas import AlertRead, AlertRuleRead, AlertState, RuleSource
from mlplatform.monitoring.alerts.sql_store import SqlAlertStore, SqlCheckLeaseStore
from mlplatform.settings import DatabaseSettings


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[db.Database]:
    settings = DatabaseSettings(url=database_url)
    await asyncio.to_thread(db.upgrade, settings)
    database = db.Database(settings)
    yield database
    await database.dispose()


@pytest.fixture
def store(database: db.Database) -> SqlAlertStore:
    return SqlAlertStore(database)


def rule(name: str, **extra: object) -> AlertRuleRead:
    values: dict[str, object] = {
        "id": new_id(),
        "name": name,
        "kind": "latency_p95_above",
        "threshold": 250.0,
        "window": "1h",
        "severity": "critical",
        "model": "clf",
        "source": RuleSource.API,
        "created_at": utcnow(),
        "created_by": "ada (k1)",
    }
    values.update(extra)
    return AlertRuleRead.model_validate(values)


async def fire(
    store: SqlAlertStore, value: float, model: str | None = "clf", **extra: object
) -> tuple[AlertRead, bool]:
    values: dict[str, object] = {
        "rule": "slow",
        "kind": "latency_p95_above",
        "model": model,
        "severity": "critical",
        "value": value,
        "threshold": 250.0,
        "message": f"p95 {value}",
        "at": utcnow(),
    }
    values.update(extra)
    return await store.fire(**values)  # type: ignore[arg-type]


async def test_rules_round_trip_names_are_unique_and_deletes_say_what_they_removed(
    store: SqlAlertStore,
) -> None:
    first, second = rule("slow"), rule("errors", kind="error_rate_above", threshold=0.1, model=None)
    await store.add_rule(first)
    await store.add_rule(second)
    assert await store.list_rules() == [first, second]
    with pytest.raises(Conflict):
        await store.add_rule(rule("slow"))
    assert await store.delete_rule(first.id) == first
    assert await store.list_rules() == [second]
    with pytest.raises(NotFound):
        await store.delete_rule(first.id)


async def test_one_open_alert_per_rule_and_model_updated_while_it_fires_and_listed_by_filter(
    store: SqlAlertStore,
) -> None:
    created, new = await fire(store, 300.0)
    assert new and created.state == AlertState.FIRING and created.model == "clf"
    again, new = await fire(store, 320.0, message="p95 320")
    assert not new and again.id == created.id
    assert again.first_seen == created.first_seen and again.last_seen > created.last_seen
    assert (again.value, again.message) == (320.0, "p95 320")
    other, new = await fire(store, 1.0, model=None, rule="drops", kind="log_drops")
    assert new and other.model is None and other.id != created.id
    assert {a.id for a in await store.open_alerts()} == {created.id, other.id}
    page = await store.list_alerts(state=AlertState.FIRING, model="clf", limit=10, offset=0)
    assert (page.total, [a.id for a in page.items]) == (1, [created.id])
    warned, _ = await fire(store, 0.5, rule="accuracy", kind="accuracy_below", severity="warning")
    critical = await store.list_alerts(state=None, model=None, severity="critical", limit=10, offset=0)
    assert {a.id for a in critical.items} == {created.id, other.id} and critical.total == 2
    warning = await store.list_alerts(state=None, model="clf", severity="warning", limit=10, offset=0)
    assert (warning.total, [a.id for a in warning.items]) == (1, [warned.id])
    none = await store.list_alerts(state=None, model=None, severity="info", limit=10, offset=0)
    assert (none.total, none.items) == (0, [])


async def test_concurrent_first_firings_open_one_alert(store: SqlAlertStore) -> None:
    results = await asyncio.gather(*(fire(store, 300.0 + i) for i in range(6)))
    assert sum(new for _, new in results) == 1
    assert len({alert.id for alert, _ in results}) == 1
    assert (await store.list_alerts(state=None, model="clf", limit=10, offset=0)).total == 1


async def test_acknowledge_keeps_it_open_and_resolve_closes_it_for_good(store: SqlAlertStore) -> None:
    created, _ = await fire(store, 300.0)
    acked = await store.acknowledge(created.id, actor="ada (k1)", at=utcnow())
    assert acked.state == AlertState.ACKNOWLEDGED and acked.acknowledged_by == "ada (k1)"
    assert acked.acknowledged_at is not None
    assert await store.acknowledge(created.id, actor="bob (k2)", at=utcnow()) == acked
    still, new = await fire(store, 310.0)  # acknowledged, still firing: the same row, still acknowledged
    assert not new and still.id == created.id and still.state == AlertState.ACKNOWLEDGED

    resolved = await store.resolve(rule="slow", model="clf", at=utcnow())
    assert resolved is not None and resolved.state == AlertState.RESOLVED and resolved.resolved_at
    assert await store.resolve(rule="slow", model="clf", at=utcnow()) is None
    with pytest.raises(Conflict):
        await store.acknowledge(created.id, actor="ada (k1)", at=utcnow())
    with pytest.raises(NotFound):
        await store.acknowledge(new_id(), actor="ada (k1)", at=utcnow())

    reopened, new = await fire(store, 400.0)
    assert new and reopened.id != created.id and reopened.state == AlertState.FIRING
    assert await store.get(created.id) == resolved
    everything = await store.list_alerts(state=None, model=None, limit=1, offset=0)
    assert everything.total == 2 and everything.items[0].id == reopened.id  # newest last_seen first
    assert (await store.list_alerts(state=None, model=None, limit=1, offset=1)).items[0].id == created.id


async def test_one_claim_per_interval_among_concurrent_callers(database: db.Database) -> None:
    leases = SqlCheckLeaseStore(database)
    now = utcnow()
    every, hold = timedelta(seconds=60), timedelta(seconds=30)

    async def claim(holder: str, at: timedelta = timedelta()) -> bool:
        return await leases.claim("checks", holder=holder, now=now + at, every=every, hold=hold)

    assert sum(await asyncio.gather(*(claim(f"i{n}") for n in range(5)))) == 1
    assert not await claim("late", timedelta(seconds=59))  # not due yet
    # Due again and never released, but the hold (30 s) has passed: a crashed holder is replaced.
    assert await claim("b", timedelta(seconds=60))
    await leases.release("checks", holder="i0")  # not the holder any more: changes nothing
    assert not await claim("c", timedelta(seconds=120) - timedelta(milliseconds=1))
    await leases.release("checks", holder="b")
    assert await claim("c", timedelta(seconds=120))


async def test_a_held_check_is_not_claimed_even_when_due(database: db.Database) -> None:
    leases = SqlCheckLeaseStore(database)
    now = utcnow()
    every, hold = timedelta(seconds=10), timedelta(seconds=60)
    assert await leases.claim("checks", holder="a", now=now, every=every, hold=hold)
    later = now + timedelta(seconds=20)  # due, but "a" still runs it
    assert not await leases.claim("checks", holder="b", now=later, every=every, hold=hold)
    await leases.release("checks", holder="a")
    assert await leases.claim("checks", holder="b", now=later, every=every, hold=hold)
