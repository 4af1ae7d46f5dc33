"""The one id generator: sortable, random, URL-safe ids."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A 26-char time-ordered id (48-bit milliseconds + 80 random bits, Crockford base32, like ULID)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(alphabet[index])
    return "".join(reversed(chars))
