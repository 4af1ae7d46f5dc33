"""How an experiment's route splits keys: shares within binomial bounds, stickiness, the shadow's share."""

from __future__ import annotations

import math
from collections import Counter

from mlplatform.registry.snapshot import Route

KEYS = [f"customer-{i}" for i in range(100_000)]


def within_binomial(count: int, n: int, p: float, sds: float = 4.0) -> bool:
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


def test_variant_shares_over_100000_keys_are_within_binomial_bounds() -> None:
    route = Route.build("01JEXPERIMENT", "ab", "request_id", [("a", 1, 50), ("b", 2, 30), ("c", 3, 20)])
    counts = Counter(route.pick(key).name for key in KEYS)
    for name, share in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert within_binomial(counts[name], len(KEYS), share), counts


def test_the_same_key_always_gets_the_same_variant_and_experiments_split_independently() -> None:
    route = Route.build("01JEXPERIMENT", "ab", "request_id", [("a", 1, 50), ("b", 2, 50)])
    assert all(route.pick(key) == route.pick(key) for key in KEYS[:1000])
    rebuilt = Route.build("01JEXPERIMENT", "ab", "request_id", [("a", 1, 50), ("b", 2, 50)])
    assert all(route.pick(key) == rebuilt.pick(key) for key in KEYS[:1000])  # any instance, any process
    other = Route.build("01JOTHER", "ab", "request_id", [("a", 1, 50), ("b", 2, 50)])
    same = sum(route.pick(key).name == other.pick(key).name for key in KEYS[:10_000])
    assert within_binomial(same, 10_000, 0.5)  # another experiment's split is unrelated to this one's


def test_a_zero_weight_variant_gets_nothing_and_a_random_key_still_splits() -> None:
    route = Route.build("01JEXPERIMENT", "ab", "random", [("a", 1, 0), ("b", 2, 100)])
    assert {route.pick(key).name for key in KEYS[:5000]} == {"b"}
    halves = Route.build("01JEXPERIMENT", "ab", "random", [("a", 1, 50), ("b", 2, 50)])
    assert within_binomial(sum(halves.pick(None).name == "a" for _ in range(10_000)), 10_000, 0.5)


def test_a_shadow_route_answers_with_the_primary_and_mirrors_its_share() -> None:
    route = Route.build("01JSHADOW", "shadow", "request_id", [("live", 1, 100), ("next", 2, 25)])
    assert {route.pick(key).name for key in KEYS[:1000]} == {"live"}
    mirrored = sum(route.mirrored(key) for key in KEYS)
    assert within_binomial(mirrored, len(KEYS), 0.25)
