"""The one clock: timezone-aware UTC now, so tests and logs agree."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored time as aware UTC: SQLite hands back naive datetimes, and every time we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
