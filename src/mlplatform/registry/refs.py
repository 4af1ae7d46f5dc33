"""Model names and the one parser of model references: name, name@alias, name-vN, name/N, full id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from mlplatform import names
from mlplatform.errors import InvalidInput

NAME_RULE = f"{names.NAME_RULE}, and not ending in -v<digits>"
ALIAS_RULE = "1-64 characters of lowercase letters, digits, '-' and '_', starting with a letter"
_VERSIONED_END = re.compile(r"-v\d+$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_FULL_ID = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)-(?P<stamp>\d{14})$")
_NAME_V = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)$")
STAGES = ("staging", "production")
ARCHIVED = "archived"


def check_name(name: str, field: str = "name") -> str:
    if not names.is_allowed_name(name) or _VERSIONED_END.search(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InvalidInput(
            f"model name {shown!r} is not allowed: {NAME_RULE}",
            details=[{"field": field, "problem": NAME_RULE}],
        )
    return name


def check_alias(alias: str, field: str = "alias") -> str:
    if not _ALIAS.fullmatch(alias) or alias == ARCHIVED:
        raise InvalidInput(
            f"alias {alias[:80]!r} is not allowed: {ALIAS_RULE} ('archived' is a status, not an alias)",
            details=[{"field": field, "problem": ALIAS_RULE}],
        )
    return alias


def version_id(name: str, version: int, created_at: datetime) -> str:
    return f"{name}-v{version}-{created_at:%Y%m%d%H%M%S}"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference: exactly one of `version`, `alias` is set, or neither (the default version)."""

    name: str
    version: int | None = None
    alias: str | None = None
    stamp: str | None = None  # from a full id: must match the version's creation time

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}-v{self.version}" + (f"-{self.stamp}" if self.stamp else "")
        return f"{self.name}@{self.alias}" if self.alias else self.name


def parse_ref(text: str, field: str = "model") -> ModelRef:
    """Parse any reference form; names are checked, nothing is looked up."""
    text = text.strip()
    if "@" in text:
        name, _, alias = text.partition("@")
        return ModelRef(check_name(name, field), alias=check_alias(alias, field))
    if "/" in text:
        name, _, number = text.partition("/")
        if not number.isdigit():
            raise InvalidInput(
                f"model reference {text[:80]!r}: after '/' comes a version number",
                details=[{"field": field, "problem": "expected name/N"}],
            )
        return ModelRef(check_name(name, field), version=int(number))
    if match := _FULL_ID.match(text):
        return ModelRef(check_name(match["name"], field), int(match["version"]), stamp=match["stamp"])
    if match := _NAME_V.match(text):
        return ModelRef(check_name(match["name"], field), int(match["version"]))
    return ModelRef(check_name(text, field))
