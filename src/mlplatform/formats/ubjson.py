"""A strict UBJSON decoder (bounds, depth, no duplicate keys): XGBoost's own parser crashes on bad input."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlplatform.formats.base import InvalidArtifactError
from mlplatform.formats.describe import reason

MAX_DEPTH = 64
_INT_SIZES = {ord("i"): 1, ord("U"): 1, ord("I"): 2, ord("l"): 4, ord("L"): 8}
_NUMBERS = {ord("i"): "i1", ord("U"): "u1", ord("I"): ">i2", ord("l"): ">i4", ord("L"): ">i8"}
_NUMBERS |= {ord("d"): ">f4", ord("D"): ">f8"}
_CONSTANTS: dict[int, Any] = {ord("T"): True, ord("F"): False, ord("Z"): None}
_STRINGS = {ord("S"), ord("H")}
_CLOSE = {ord("["): ord("]"), ord("{"): ord("}")}


class _Malformed(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise _Malformed("it ends in the middle of a value")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def marker(self) -> int:
        return self.take(1)[0]

    def length(self, marker: int | None = None) -> int:
        marker = self.marker() if marker is None else marker
        size = _INT_SIZES.get(marker)
        if size is None:
            raise _Malformed(f"a length has the marker {chr(marker)!r}")
        value = int.from_bytes(self.take(size), "big", signed=marker != ord("U"))
        if value < 0:
            raise _Malformed("a length is negative")
        return value

    def text(self) -> str:
        try:
            return self.take(self.length()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Malformed("a string is not UTF-8") from exc


def decode_ubjson(data: bytes, *, what: str = "The XGBoost UBJ model") -> Any:
    """The document, with typed numeric arrays as numpy arrays; InvalidArtifactError if anything is off."""
    reader = _Reader(data)
    try:
        value = _value(reader, reader.marker(), 0)
        if reader.pos != len(data):
            raise _Malformed("there are bytes after the end of the document")
    except _Malformed as exc:
        raise InvalidArtifactError(
            f"{what} is damaged ({reason(exc)}); save the model again and upload the new file."
        ) from exc
    return value


def _value(reader: _Reader, marker: int, depth: int) -> Any:
    if marker in _NUMBERS:
        dtype = np.dtype(_NUMBERS[marker])
        return np.frombuffer(reader.take(dtype.itemsize), dtype=dtype)[0].item()
    if marker in _CONSTANTS:
        return _CONSTANTS[marker]
    if marker in _STRINGS:
        return reader.text()
    if marker == ord("C"):
        return chr(reader.take(1)[0])
    if marker in _CLOSE:
        if depth >= MAX_DEPTH:
            raise _Malformed(f"it nests deeper than {MAX_DEPTH} levels")
        return _container(reader, marker, depth + 1)
    raise _Malformed(f"it has the unknown marker {chr(marker)!r}")


def _container(reader: _Reader, marker: int, depth: int) -> Any:
    value_type, count = 0, -1
    following = reader.marker()
    if following == ord("$"):
        value_type = reader.marker()
        if value_type not in _NUMBERS and value_type not in _STRINGS:
            raise _Malformed(f"a container has the element type {chr(value_type)!r}")
        following = reader.marker()
        if following != ord("#"):
            raise _Malformed("a typed container has no count")
    if following == ord("#"):
        count = reader.length()
    else:
        reader.pos -= 1
    if marker == ord("[") and value_type in _NUMBERS:
        dtype = np.dtype(_NUMBERS[value_type])
        return np.frombuffer(reader.take(count * dtype.itemsize), dtype=dtype)
    is_object = marker == ord("{")
    items: list[Any] = []
    keys: list[str] = []
    while count < 0 or len(items) < count:
        if count < 0:
            if reader.marker() == _CLOSE[marker]:
                break
            reader.pos -= 1
        if is_object:
            keys.append(reader.text())
        items.append(_value(reader, value_type or reader.marker(), depth))
    if not is_object:
        return items
    if len(set(keys)) != len(keys):
        raise _Malformed("an object repeats a key")
    return dict(zip(keys, items, strict=True))
