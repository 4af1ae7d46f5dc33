"""The one id generator: sortable, random, URL-safe ids."""

from __future__ import annotations

import os
import threading
import time

_RANDOM_HEX = 14  # 56 bits
_POOL_IDS = 512


class _RandomPool:
    """`os.urandom` drawn 512 ids at a time: one system call per id measured several microseconds on the
    predict path (cold kernel paths between requests), the pool a fraction of one. A forked child starts
    with an empty pool, so parent and child never hand out the same bits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hex = ""
        self.at = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.hex, self.at = "", 0

    def take(self) -> str:
        with self.lock:
            at = self.at
            if at >= len(self.hex):
                self.hex, at = os.urandom(_POOL_IDS * _RANDOM_HEX // 2).hex(), 0
            self.at = at + _RANDOM_HEX
            return self.hex[at : at + _RANDOM_HEX]


_random = _RandomPool()


def new_id() -> str:
    """26 lowercase hex characters: 48-bit milliseconds then 56 random bits, so ids made later sort later.

    Hex rather than base32: it encodes in C, and ids are minted per prediction (a thousand per batch).
    """
    return f"{time.time_ns() // 1_000_000:012x}{_random.take()}"


BLOCK = 0x10000  # ids one prefix can number: the sequence is 4 hex digits


def new_ids(count: int) -> list[str]:
    """`count` ids from one call, in blocks of up to `BLOCK` that share a 22-character prefix (time and 40
    random bits) followed by a 4-hex-digit sequence from 0000: unique, in order, and cheap (one per row of a
    10,000-row batch). A block can be stored as one record that holds its first id (`block_ids` gives the
    rest)."""
    ids: list[str] = []
    for start in range(0, count, BLOCK):
        prefix = new_id()[:22]
        ids += [f"{prefix}{index:04x}" for index in range(min(BLOCK, count - start))]
    return ids


def new_block() -> str:
    """The first id of a fresh block, for predictions that need no ids of their own until they are read."""
    return new_ids(1)[0]


def block_ids(first: str, count: int) -> list[str]:
    """The `count` ids of the block that starts with `first`."""
    prefix, start = first[:22], int(first[22:26], 16)
    return [f"{prefix}{index:04x}" for index in range(start, start + count)]
