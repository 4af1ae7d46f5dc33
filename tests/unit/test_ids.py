"""Ids: 26 characters, unique, ordered by creation."""

from __future__ import annotations

import os
import time

from mlplatform.ids import BLOCK, block_ids, new_id, new_ids


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
    assert block_ids(batch[0], 10_000) == batch


def test_past_one_block_ids_start_a_new_prefix() -> None:
    ids = new_ids(BLOCK + 5)
    assert len(set(ids)) == BLOCK + 5
    assert ids[BLOCK].endswith("0000") and ids[BLOCK][:22] != ids[0][:22]
    assert block_ids(ids[0], BLOCK) == ids[:BLOCK] and block_ids(ids[BLOCK], 5) == ids[BLOCK:]


def test_a_forked_child_draws_fresh_random_bits() -> None:
    new_id()  # the parent's pool now holds bits a careless child would hand out again
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the random part of its next ids, then leave at once
        os.write(writer, "".join(new_id()[12:] for _ in range(3)).encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 1024).decode()
    os.waitpid(pid, 0)
    parent = "".join(new_id()[12:] for _ in range(3))
    assert len(child) == 42 and child != parent
