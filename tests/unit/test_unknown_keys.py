"""UnknownKeys: misses remembered for their time, queries bounded by the budget, concurrent lookups shared."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mlplatform.auth.schemas import Role
from mlplatform.auth.store import StoredKey
from mlplatform.auth.unknown import UnknownKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored(key_hash: str, **changes: datetime) -> StoredKey:
    fields = {"expires_at": None, "revoked_at": None, **changes}
    return StoredKey(id="k", key_hash=key_hash, role=Role.VIEWER, owner="o", rate_limit=None, **fields)


def finder(known: dict[str, StoredKey], calls: list[str], delay: float = 0) -> object:
    async def find(key_hash: str) -> StoredKey | None:
        calls.append(key_hash)
        await asyncio.sleep(delay)
        return known.get(key_hash)

    return find


async def test_a_miss_is_remembered_until_its_time_is_up_or_a_key_is_created() -> None:
    clock, calls = Clock(), []
    keys = UnknownKeys(finder({}, calls), ttl=30, per_second=100, clock=clock)  # type: ignore[arg-type]
    assert await keys.look_up("a") is None
    assert await keys.look_up("a") is None
    assert calls == ["a"]
    clock.now += 31
    assert await keys.look_up("a") is None
    assert calls == ["a", "a"]
    keys.forget_all()
    assert await keys.look_up("a") is None
    assert calls == ["a", "a", "a"]


async def test_usable_keys_are_not_remembered_unusable_ones_are() -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    known = {
        "ok": stored("ok"),
        "revoked": stored("revoked", revoked_at=past),
        "old": stored("old", expires_at=past),
    }
    calls: list[str] = []
    keys = UnknownKeys(finder(known, calls), ttl=30, per_second=100, clock=Clock())  # type: ignore[arg-type]
    for key_hash in ("ok", "revoked", "old") * 3:
        assert await keys.look_up(key_hash) == known[key_hash]
    assert calls == ["ok", "revoked", "old", "ok", "ok"]


async def test_queries_past_the_budget_are_answered_unknown_and_not_remembered() -> None:
    clock, calls = Clock(), []
    keys = UnknownKeys(finder({}, calls), ttl=30, per_second=5, clock=clock)  # type: ignore[arg-type]
    for i in range(50):
        await keys.look_up(f"h{i}")
    assert len(calls) == 5 and keys.skipped == 45
    clock.now += 1  # one second refills five tokens
    for i in range(5, 50):
        await keys.look_up(f"h{i}")
    assert len(calls) == 10
    assert "h10" not in keys.unknown  # skipped, so looked up again when the budget allows


async def test_concurrent_lookups_of_one_hash_share_one_query() -> None:
    calls: list[str] = []
    keys = UnknownKeys(finder({}, calls, delay=0.01), ttl=30, per_second=1, clock=Clock())  # type: ignore[arg-type]
    assert await asyncio.gather(*(keys.look_up("same") for _ in range(20))) == [None] * 20
    assert calls == ["same"]
