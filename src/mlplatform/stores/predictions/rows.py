"""Stored prediction-log and feedback rows to and from the store's records: refs, COPY text, arrays."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from mlplatform.clock import as_utc
from mlplatform.ids import block_ids
from mlplatform.stores.predictions.base import (
    FeedbackEntry,
    LabelledPredictions,
    LoggedPrediction,
    PredictionRef,
)


def stored_time(at: datetime | None) -> datetime | None:
    """Bound times as UTC: SQLite stores and compares them as naive UTC text."""
    return None if at is None else as_utc(at).astimezone(UTC)


def ref_of(row: Any, prediction_id: str, position: int, *, batched: bool) -> PredictionRef:
    return PredictionRef(
        prediction_id=prediction_id,
        block_id=row.id,
        position=position,
        batched=batched,
        model=row.model,
        version=row.version,
        request_id=row.request_id,
        created_at=as_utc(row.created_at),
    )


def feedback_row(
    row_id: str, entry: FeedbackEntry, received_at: datetime | None, actor: str | None, *, current: bool
) -> tuple[Any, ...]:
    """A `feedback` row in the table's column order (`sql.FEEDBACK_COLUMNS`)."""
    ref = entry.prediction
    return (
        row_id,
        ref.prediction_id,
        ref.block_id,
        ref.position,
        ref.batched,
        ref.model,
        ref.version,
        stored_time(ref.created_at),
        entry.actual,
        stored_time(entry.observed_at),
        received_at,
        actor,
        None if current else received_at,
    )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    """One field of COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


def copy_text(
    row_ids: Sequence[str],
    entries: Sequence[FeedbackEntry],
    current: Sequence[bool],
    received_at: datetime | None,
    actor: str | None,
) -> str:
    """The `feedback` rows in COPY's text format, as one string: what is shared by a request (its time,
    actor), by a logged row (model, version, time) or by a label value is formatted once."""
    received, who = _copy_field(received_at), _copy_field(actor)
    tail = {True: f"{received}\t{who}\t\\N\n", False: f"{received}\t{who}\t{received}\n"}
    logged: dict[tuple[str, bool], str] = {}
    labels: dict[tuple[type, Any], str] = {}
    times: dict[datetime, str] = {}
    lines = []
    for row_id, entry, now in zip(row_ids, entries, current, strict=True):
        ref = entry.prediction
        if (shared := logged.get((ref.block_id, ref.batched))) is None:
            fields = (ref.model, ref.version, stored_time(ref.created_at))
            shared = logged[(ref.block_id, ref.batched)] = "\t".join(map(_copy_field, fields))
        if (label := labels.get((type(entry.actual), entry.actual))) is None:
            label = labels[(type(entry.actual), entry.actual)] = _copy_field(
                orjson.dumps(entry.actual).decode()
            )
        if (observed := times.get(entry.observed_at)) is None:
            observed = times[entry.observed_at] = _copy_field(stored_time(entry.observed_at))
        batched = "t" if ref.batched else "f"
        lines.append(
            f"{row_id}\t{ref.prediction_id}\t{ref.block_id}\t{ref.position}\t{batched}\t{shared}\t"
            f"{label}\t{observed}\t{tail[now]}"
        )
    return "".join(lines)


def single(row: Any) -> LoggedPrediction:
    return LoggedPrediction(
        prediction_id=row["id"],
        model=row["model"],
        version=row["version"],
        variant=row["variant"],
        request_id=row["request_id"],
        inputs=row["inputs"],
        prediction=row["prediction"],
        probabilities=row["probabilities"],
        confidence=row["confidence"],
        latency_ms=row["latency_ms"],
        cached=bool(row["cached"]),
        created_at=as_utc(row["created_at"]),
        experiment=row["experiment"],
    )


def block(row: Any) -> list[LoggedPrediction]:
    count, classes = row["count"], row["classes"]
    created_at = as_utc(row["created_at"])
    inputs = inputs_of(row["inputs_f64"], row["inputs"], count)
    probabilities = probabilities_of(row["probabilities_f64"], row["probabilities"], count)
    entries = []
    for id_, features, prediction, probs in zip(
        block_ids(row["id"], count), inputs, row["predictions"], probabilities, strict=True
    ):
        by_class = dict(zip(classes, probs, strict=True)) if classes and probs else None
        entries.append(
            LoggedPrediction(
                prediction_id=id_,
                model=row["model"],
                version=row["version"],
                variant=row["variant"],
                request_id=row["request_id"],
                inputs=features,
                prediction=prediction,
                probabilities=by_class,
                confidence=max(probs) if probs else None,
                latency_ms=row["latency_ms"],
                cached=False,
                created_at=created_at,
                experiment=row["experiment"],
            )
        )
    return entries


def inputs_of(f64: bytes | None, json_inputs: list[list[Any]] | None, count: int) -> list[list[Any]]:
    return _matrix(f64, count) if f64 is not None else list(json_inputs or [])


def probabilities_of(
    f64: bytes | None, json_probabilities: list[list[float]] | None, count: int
) -> list[list[float]] | list[None]:
    if f64 is not None:  # written since migration 0007
        return _matrix(f64, count)
    if json_probabilities:  # JSON, written before it
        return [*json_probabilities]
    return [None] * count


def _matrix(data: bytes, count: int) -> list[list[float]]:
    values: list[list[float]] = np.frombuffer(data, dtype="<f8").reshape(count, -1).tolist()
    return values


def labelled(
    found: Iterable[Any],
    singles: dict[str, tuple[Any, dict[str, float] | None]],
    blocks: dict[str, tuple[list[Any], list[str] | None, list[list[float]] | list[None]]],
) -> LabelledPredictions:
    ids: list[str] = []
    versions: list[str] = []
    predicted: list[Any] = []
    actual: list[Any] = []
    predicted_at: list[datetime] = []
    by_class: list[dict[str, float] | None] = []
    for row in found:
        if row.batched:
            if row.block_id not in blocks:
                continue  # the log row is gone (retention): nothing to compare with
            predictions, classes, probabilities = blocks[row.block_id]
            probs = probabilities[row.position]
            predicted.append(predictions[row.position])
            by_class.append(dict(zip(classes, probs, strict=True)) if classes and probs else None)
        else:
            if row.block_id not in singles:
                continue
            prediction, probs_by_class = singles[row.block_id]
            predicted.append(prediction)
            by_class.append(probs_by_class)
        ids.append(row.prediction_id)
        versions.append(row.version)
        actual.append(row.actual)
        predicted_at.append(as_utc(row.predicted_at))
    classes_seen = list(dict.fromkeys(label for probs in by_class if probs for label in probs))
    matrix = None
    if classes_seen:
        matrix = np.full((len(ids), len(classes_seen)), np.nan)
        column = {label: index for index, label in enumerate(classes_seen)}
        for index, probs in enumerate(by_class):
            for label, value in (probs or {}).items():
                matrix[index, column[label]] = value
    return LabelledPredictions(ids, versions, predicted, actual, classes_seen, matrix, predicted_at)
