"""The web console's parts that need no server: session expiry, the lineage layout, histogram labels."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from mlplatform.monitoring.schemas import ProfileHistogram
from mlplatform.platform import Platform
from mlplatform.registry.schemas import Lineage, VersionBrief
from mlplatform.settings import Settings, UiSettings
from mlplatform.stores.cache.memory import MemoryCache
from mlplatform.ui import charts, lineage
from mlplatform.ui.console import secure_cookie
from mlplatform.ui.sessions import SessionStore, session_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_session_slides_while_used_and_ends_idle_or_too_old() -> None:
    clock, cache = Clock(), MemoryCache()
    store = SessionStore(cache, UiSettings(session_idle_minutes=10, session_max_hours=1), clock=clock)
    session = await store.create("key-1")
    assert session.key_id == "key-1" and session.id != session.csrf
    assert await cache.get(session_key(session.id)) is not None
    for _ in range(5):  # used every 9 minutes: alive past the 10 minutes idle limit
        clock.now += 9 * 60
        found = await store.find(session.id)
        assert found is not None and found.csrf == session.csrf
    clock.now += 20 * 60  # 65 minutes after sign-in: past the maximum age, however used
    assert await store.find(session.id) is None
    assert await cache.get(session_key(session.id)) is None

    idle = await store.create("key-1")
    clock.now += 10 * 60
    assert await store.find(idle.id) is None
    assert await store.find("") is None and await store.find("x" * 500) is None


async def test_csrf_tokens_compare_whole() -> None:
    session = await SessionStore(MemoryCache(), UiSettings()).create("k")
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(session.csrf[:-1])
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")


def brief(version: int, name: str = "fraud") -> VersionBrief:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return VersionBrief(
        id=f"{name}-v{version}-20261201000000", version=version, status="ready", created_at=at
    )


def test_lineage_places_sources_parents_and_children_around_the_version() -> None:
    graph = Lineage(
        id="fraud-v3-20261201000000",
        parents=[brief(2), brief(1, "base-model")],
        children=[brief(4), brief(5)],
        training_dataset_id="ds-1",
        training_job_id="job-1",
    )
    nodes, edges = lineage.layout("fraud", 3, graph)
    where = {node.title: (node.column, node.row) for node in nodes}
    assert where == {
        "dataset": (0, 0),
        "training job": (1, 0),
        "fraud v3": (2, 0),
        "fraud v2": (1, 1),
        "base-model v1": (0, 1),  # a parent of another model: named from its id
        "fraud v4": (3, 0),
        "fraud v5": (3, 1),
    }
    assert {(a.title, b.title) for a, b, _ in edges} == {
        ("dataset", "training job"),
        ("training job", "fraud v3"),
        ("fraud v2", "fraud v3"),
        ("base-model v1", "fraud v2"),
        ("fraud v3", "fraud v4"),
        ("fraud v3", "fraud v5"),
    }
    svg = lineage.render("fraud", 3, graph)
    assert svg.count("<a href=") == 4 and 'href="/ui/models/base-model/versions/1"' in svg


def test_lineage_escapes_what_it_draws() -> None:
    graph = Lineage(id="x", parents=[], children=[], training_dataset_id="<script>", training_job_id=None)
    svg = lineage.render("m", 1, graph)
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_numeric_cells_are_re_binned_to_equal_widths_for_drawing() -> None:
    # Quantile cells: equal counts over unequal intervals are not a flat distribution.
    quantiles = ProfileHistogram(counts=[0, 10, 10, 10, 0], edges=[0.0, 1.0, 2.0, 6.0])
    counts, labels = charts.display_bins(quantiles, bins=6)
    assert counts == [10.0, 10.0, 2.5, 2.5, 2.5, 2.5]
    assert labels[0] == "0 – 1" and len(labels) == 6
    assert sum(counts) == 30
    categorical = ProfileHistogram(counts=[4, 0], labels=["a", "b"])
    assert charts.display_bins(categorical) == ([4.0, 0.0], ["a", "b"])
    svg = charts.histogram(categorical, "colour")
    assert svg.count('class="bar"') == 2 and "a: 4, b: 0" in svg
    assert "no values" in charts.histogram(ProfileHistogram(counts=[0, 0], edges=[1.0]), "x")


def test_the_cookie_is_secure_in_every_profile_but_the_default() -> None:
    def secure(**settings: Any) -> bool:
        return secure_cookie(cast(Platform, SimpleNamespace(settings=Settings(**settings))))

    assert not secure() and secure(profile="prod") and secure(profile="staging")
    assert secure(ui=UiSettings(secure_cookie=True)) and not secure(
        profile="prod", ui=UiSettings(secure_cookie=False)
    )
