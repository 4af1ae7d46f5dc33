"""Ids: 26 characters, unique, ordered by creation."""

from __future__ import annotations

import time

from mlplatform.ids import new_id, new_ids


def test_ids_are_unique_url_safe_and_ordered_by_time() -> None:
    first = new_id()
    time.sleep(0.002)
    later = [new_id() for _ in range(1000)]
    assert len(set(later)) == 1000
    assert all(len(i) == 26 and i.isalnum() and i == i.lower() for i in later)
    assert all(first < i for i in later)


def test_batch_ids_are_unique_in_order_and_unlike_the_next_batch() -> None:
    batch = new_ids(10_000)
    assert len(set(batch)) == 10_000 and batch == sorted(batch)
    assert all(len(i) == 26 for i in batch)
    assert not set(batch) & set(new_ids(10_000))
    assert len(set(new_ids(70_000))) == 70_000  # past the 4-digit sequence: one id each
