"""How each column's values are written to a backup file and read back: one JSON array per row.

Every value keeps its type across SQLite and PostgreSQL: times as ISO 8601 in UTC, JSON documents as their
text (so a JSON `null` stays apart from SQL NULL), bytes as base64, floats as JSON numbers (NaN and infinities
as Python's json writes them).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Integer, LargeBinary, Numeric, String
from sqlalchemy.types import TypeEngine

KINDS = ("string", "integer", "float", "boolean", "datetime", "naive-datetime", "json", "binary")


class UnsupportedColumnError(TypeError):
    """A column of a type the backup format does not carry yet: add it here, with a round-trip test."""


def column_kind(column: Column[Any]) -> str:
    """The backup kind of a table column."""
    kind = type_kind(column.type)
    if kind is None:
        raise UnsupportedColumnError(
            f"{column.table.name}.{column.name}: type {column.type!r} is not carried by backups"
        )
    return kind


def type_kind(type_: TypeEngine[Any]) -> str | None:
    # Order matters: Boolean and JSON are not Strings, but check the specific types first anyway.
    if isinstance(type_, JSON):
        return "json"
    if isinstance(type_, LargeBinary):
        return "binary"
    if isinstance(type_, Boolean):
        return "boolean"
    if isinstance(type_, DateTime):
        return "datetime" if type_.timezone else "naive-datetime"
    if isinstance(type_, Integer):
        return "integer"
    if isinstance(type_, Float | Numeric):
        return "float"
    if isinstance(type_, String):
        return "string"
    return None


def _time_out(value: datetime) -> str:
    # SQLite hands back naive datetimes; every time we store is UTC.
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def _bytes_out(value: bytes | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _bytes_in(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _time_in(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _same(value: Any) -> Any:
    return value


def _float_in(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _int_in(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _bool_in(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _str_in(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _json_in(value: Any) -> str:
    json.loads(_str_in(value))  # must be a JSON document; it is bound as its text (see `load`)
    return str(value)


# kind → (value read from the database → JSON-able, JSON value → value to bind); None stays None both ways.
ENCODERS: dict[str, Callable[[Any], Any]] = {
    "string": _same,
    "integer": _same,
    "float": float,
    "boolean": bool,
    "datetime": _time_out,
    "naive-datetime": lambda v: v.replace(tzinfo=None).isoformat(),
    "json": _same,  # selected as text (`export.select_table`)
    "binary": _bytes_out,
}
DECODERS: dict[str, Callable[[Any], Any]] = {
    "string": _str_in,
    "integer": _int_in,
    "float": _float_in,
    "boolean": _bool_in,
    "datetime": _time_in,
    "naive-datetime": datetime.fromisoformat,
    "json": _json_in,
    "binary": _bytes_in,
}


def row_encoder(kinds: list[str]) -> Callable[[Any], str]:
    """One database row (a sequence in column order) → one line of the backup file."""
    encoders = [ENCODERS[kind] for kind in kinds]

    def encode(row: Any) -> str:
        cells = [None if value is None else enc(value) for enc, value in zip(encoders, row, strict=True)]
        return json.dumps(cells, ensure_ascii=False, separators=(",", ":")) + "\n"

    return encode


def row_decoder(names: list[str], kinds: list[str]) -> Callable[[str], dict[str, Any]]:
    """A line of a backup file → its values by column name, ready to bind; ValueError when malformed."""
    decoders = list(zip(names, [DECODERS[kind] for kind in kinds], strict=True))

    def decode(line: str) -> dict[str, Any]:
        cells = json.loads(line)
        if not isinstance(cells, list) or len(cells) != len(decoders):
            raise ValueError(f"expected a list of {len(decoders)} values")
        return {
            name: None if value is None else dec(value)
            for (name, dec), value in zip(decoders, cells, strict=True)
        }

    return decode
