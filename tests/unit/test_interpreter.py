"""Serving-process interpreter settings: GIL switch interval, young-generation threshold, heap freezing."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from mlplatform import interpreter


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    monkeypatch.setattr(interpreter, "_serving", False)
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    sys.setswitchinterval(interval)


def test_apps_outside_a_serving_process_never_freeze_the_heap(restored: None) -> None:
    interpreter.freeze_heap()
    assert gc.get_freeze_count() == 0


def test_a_serving_process_is_tuned_and_freezes_what_is_alive(restored: None) -> None:
    interpreter.tune_for_serving()
    assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL_SECONDS)
    assert gc.get_threshold()[0] == interpreter.YOUNG_THRESHOLD
    interpreter.freeze_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # at least the modules this test process imported
    gc.collect()  # a full collection leaves the frozen objects where they are
    # (other threads of the test process, e.g. pytest-xdist's, may free a few by reference count meanwhile)
    assert 0 <= frozen - gc.get_freeze_count() < 100
