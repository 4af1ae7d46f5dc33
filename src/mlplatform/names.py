"""The allow-list for user-chosen names (models, datasets) that become one segment of a storage key."""

from __future__ import annotations

import re

NAME_RULE = "1-128 characters of lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def is_allowed_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None
