"""Units people write in configuration: sizes ("100MB") and rates ("100/second")."""

from __future__ import annotations

import re

from limits import parse as parse_rate

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1024,
    "KIB": 1024,
    "K": 1024,
    "MB": 1024**2,
    "MIB": 1024**2,
    "M": 1024**2,
    "GB": 1024**3,
    "GIB": 1024**3,
    "G": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a size; units are binary (1MB = 1 MiB, as Spring reads them)."""
    match = _SIZE.match(text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"{text!r} is not a size such as 512, 64KB or 100MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def check_rate(text: str) -> str:
    """Validate a rate such as "100/second" or "5000 per minute" (the `limits` notation)."""
    try:
        parse_rate(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate such as 100/second or 5000/minute") from None
    return text
