"""Time buckets for performance over time: sizes, defaults and UTC-aligned bucket bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlplatform.errors import InvalidInput

BUCKET_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MIN_BUCKET = timedelta(minutes=5)
MAX_BUCKETS = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_size(bucket: str | None, span: timedelta) -> tuple[str, timedelta]:
    """The bucket as given (`15m`, `1h`, `6h`, `1d`, …) or the default for the span: hourly up to two days,
    six-hourly up to two weeks, daily beyond. Refused: a malformed size, under 5 minutes, or one cutting
    the span into more than MAX_BUCKETS buckets."""
    if bucket is None:
        if span <= timedelta(days=2):
            return "1h", timedelta(hours=1)
        if span <= timedelta(days=14):
            return "6h", timedelta(hours=6)
        return "1d", timedelta(days=1)
    amount, unit = bucket[:-1], bucket[-1:]
    if not (amount.isdigit() and len(amount) <= 4 and unit in BUCKET_UNITS and int(amount) > 0):
        problem = "a number and a unit, m, h or d (e.g. 15m, 1h, 1d)"
        raise InvalidInput(f"bucket: {problem}", details=[{"field": "bucket", "problem": problem}])
    size = int(amount) * BUCKET_UNITS[unit]
    if size < MIN_BUCKET:
        problem = f"at least {MIN_BUCKET.seconds // 60} minutes"
        raise InvalidInput(f"bucket: {problem}", details=[{"field": "bucket", "problem": problem}])
    if span / size > MAX_BUCKETS:
        problem = f"at most {MAX_BUCKETS} buckets in the window: choose a larger bucket or a shorter window"
        raise InvalidInput(f"bucket: {problem}", details=[{"field": "bucket", "problem": problem}])
    return bucket, size


def bounds(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """`[from, to)` of each bucket, oldest first: buckets start at whole multiples of `size` since the Unix
    epoch (whole hours, whole UTC days), and the first and last are cut to the window."""
    first = EPOCH + ((start - EPOCH) // size) * size
    found = []
    at = first
    while at < end:
        found.append((max(at, start), min(at + size, end)))
        at += size
    return found
