"""Integers as the databases store them (int64): the bounds every count, offset and version is declared with.

Python's integers are unbounded and SQLite and PostgreSQL refuse past 2**63-1 with a driver error, so a
number from a request is bounded where it is declared (a query, path or body field) and answered 422 there.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le

INT64_MAX = 2**63 - 1

Offset = Annotated[int, Ge(0), Le(INT64_MAX)]
"""How many items a page skips."""

VersionNumber = Annotated[int, Ge(1), Le(INT64_MAX)]
"""A model version's number: 1, 2, …"""
