"""Values as the databases store them: the bounds every count, offset, version and text is declared with.

Python's integers are unbounded and its strings may hold NUL; SQLite and PostgreSQL refuse integers past
their column type (a version is an INTEGER column: int32 on PostgreSQL) and PostgreSQL refuses NUL in text,
each with a driver error. So a value from a request is bounded where it is declared (a query, path or body
field) and answered 422 there, naming the field.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le
from pydantic import AfterValidator

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Offset = Annotated[int, Ge(0), Le(INT64_MAX)]
"""How many items a page skips (OFFSET is a bigint)."""

VersionNumber = Annotated[int, Ge(1), Le(INT32_MAX)]
"""A model version's number: 1, 2, … (an INTEGER column)."""

NUL_PROBLEM = "must not contain NUL (\\u0000) characters"


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_PROBLEM)
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""A string stored as text."""
