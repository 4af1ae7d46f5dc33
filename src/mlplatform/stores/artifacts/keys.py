"""The artifact key allow-list: the one check every store runs before any I/O."""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255

# ASCII only, and always used with fullmatch: "$" would accept a trailing newline.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*", re.ASCII)


class InvalidKeyError(ValueError):
    """An artifact key (or list prefix) outside the allow-list."""


def check_key(key: str, *, allow_prefix: bool = False) -> str:
    """Return `key` unchanged when it is a safe relative key, else raise `InvalidKeyError`.

    A key is segments of `[A-Za-z0-9][A-Za-z0-9._=-]*` joined by `/`, at most 1024 characters in all and 255
    per segment; so no `.`/`..` segment, no absolute path, no empty segment, backslash, `%`, control
    character or non-ASCII character. With `allow_prefix=True` (list prefixes) the key may also be empty or
    end with one `/`.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"artifact key {key!r}: must be a string, not {type(key).__name__}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"artifact key {key[:40]!r}...: longer than {MAX_KEY_LENGTH} characters")
    body = key
    if allow_prefix:
        if key == "":
            return key
        if key.endswith("/"):
            body = key[:-1]
    if body == "":
        raise InvalidKeyError(f"artifact key {key!r}: must not be empty")
    if body.startswith("/"):
        raise InvalidKeyError(f"artifact key {key!r}: must be relative (no leading '/')")
    for segment in body.split("/"):
        problem = _segment_problem(segment)
        if problem:
            raise InvalidKeyError(f"artifact key {key!r}: {problem}")
    return key


def is_valid_segment(segment: str) -> bool:
    """True when `segment` may be one `/`-separated part of a key."""
    return len(segment) <= MAX_SEGMENT_LENGTH and _SEGMENT.fullmatch(segment) is not None


def _segment_problem(segment: str) -> str | None:
    if segment == "":
        return "empty path segment ('//' or trailing '/')"
    if segment in (".", ".."):
        return f"'{segment}' segments are not allowed"
    if len(segment) > MAX_SEGMENT_LENGTH:
        return f"segment longer than {MAX_SEGMENT_LENGTH} characters"
    if _SEGMENT.fullmatch(segment):
        return None
    bad = next((c for c in segment if not (c.isascii() and (c.isalnum() or c in "._=-"))), None)
    if bad is not None:
        return f"character {bad!r} is not allowed (only A-Z a-z 0-9 . _ = - and '/' between segments)"
    return f"segment {segment!r} must start with a letter or digit"
