"""The prediction log store interface: predictions logged singly or in blocks, and their feedback."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 5x, once per prediction
class PredictionRecord:
    """One single-row prediction (a `prediction_logs` row)."""

    id: str
    model: str
    version: str
    variant: str | None
    request_id: str | None
    inputs: list[Any]
    prediction: Any
    probabilities: dict[str, float] | None
    confidence: float | None
    latency_ms: float
    cached: bool
    created_at: datetime
    experiment: str | None = None

    @property
    def count(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """Consecutive predictions of one request as arrays (a `prediction_batches` row): built in O(1) on the
    hot path, serialised on the writer's thread (numbers as raw float64, anything else numpy to JSON in C)."""

    first_id: str
    model: str
    version: str
    variant: str | None
    request_id: str | None
    inputs: np.ndarray  # n_rows × n_features
    predictions: np.ndarray
    classes: list[str] | None
    probabilities: np.ndarray | None  # n_rows × n_classes, columns in `classes` order
    latency_ms: float
    created_at: datetime
    experiment: str | None = None

    @property
    def count(self) -> int:
        return len(self.predictions)


LogRecord = PredictionRecord | BatchRecord


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    """One prediction as read back, whether it was logged alone or inside a block."""

    prediction_id: str
    model: str
    version: str
    variant: str | None
    request_id: str | None
    inputs: list[Any]
    prediction: Any
    probabilities: dict[str, float] | None
    confidence: float | None
    latency_ms: float
    cached: bool
    created_at: datetime
    experiment: str | None = None


@dataclass(slots=True)  # not frozen (see PredictionRecord): one per label of a 10,000-label request
class PredictionRef:
    """Where a logged prediction lives: its row (`block_id`, a block's first id or a single's own id), its
    position in that row (0 for a single), and what feedback needs to know about it."""

    prediction_id: str
    block_id: str
    position: int
    batched: bool
    model: str
    version: str
    request_id: str | None
    created_at: datetime


@dataclass(slots=True)  # not frozen: one per label
class FeedbackEntry:
    """An actual value (ground truth) for one prediction; `observed_at` is when it was observed."""

    prediction: PredictionRef
    actual: Any
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class FeedbackHistoryEntry:
    actual: Any
    observed_at: datetime
    received_at: datetime
    actor: str | None
    superseded_at: datetime | None  # None: the current value


@dataclass(frozen=True, slots=True)
class LabelledPredictions:
    """Predictions of a window with their current actual values, as parallel arrays ready for metrics.

    `probabilities` has one column per label of `classes` (every class label seen in the rows' logged
    probabilities, as strings, in first-seen order) and a row of NaN where a prediction logged none; it is
    None when no row has probabilities."""

    prediction_ids: list[str]
    versions: list[str]
    predicted: list[Any]
    actual: list[Any]
    classes: list[str]
    probabilities: np.ndarray | None
    predicted_at: list[datetime] = field(default_factory=list)  # when each was predicted (aware UTC)

    def __len__(self) -> int:
        return len(self.prediction_ids)


class PredictionLogStore(ABC):
    """Logged predictions (single rows and blocks of a batch request) and the feedback given for them.

    Contract, for every backend:
    - Writes: `append` is synchronous and is called from one worker thread at a time (the log writer's);
      it writes every record of the call or raises, and then has written none. It keeps a connection of its
      own between calls; `close_appender` releases it (`append` may be called again later: it reconnects).
      Nothing else of the store is called from that thread; every other method is async.
    - Ids: a block of `count` predictions holds `ids.block_ids(first_id, count)`. Every method that takes a
      prediction id accepts any id of a block as well as a single's id.
    - Times are aware UTC datetimes; `start` is inclusive and `end` exclusive; None leaves that side open.
    - Filters: `model` and `version` (a version's full id) match exactly; None matches every value.
    - Feedback: at most one current actual value per prediction. Adding feedback for a prediction that has
      one supersedes it (last received wins); superseded values are kept, with the time they were
      superseded, as the audit history (`feedback_history`).
    """

    # --- writing the log (the writer's worker thread) -------------------------------------------------

    @abstractmethod
    def append(self, records: Sequence[LogRecord]) -> None:
        """Write the records (singles and blocks) in one transaction; COPY on PostgreSQL."""

    @abstractmethod
    def close_appender(self) -> None:
        """Release `append`'s connection; a no-op when there is none."""

    # --- reading the log ------------------------------------------------------------------------------

    @abstractmethod
    async def query(
        self,
        *,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        arm: tuple[str, str] | None = None,
    ) -> list[LoggedPrediction]:
        """The newest `limit` predictions that match, singles and block members alike, newest first (a
        block's predictions, which share a time, in id order). `arm` is an (experiment, variant) pair."""

    @abstractmethod
    async def count(
        self,
        *,
        model: str,
        version: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        arm: tuple[str, str] | None = None,
    ) -> int:
        """How many predictions match (every member of a block counts)."""

    @abstractmethod
    async def counts(self, *, model: str, version: str | None = None, edges: Sequence[datetime]) -> list[int]:
        """How many predictions match in each `[edges[i], edges[i + 1])`, oldest first (one count fewer
        than edges; every member of a block counts): a query per table, whatever the number of buckets."""

    @abstractmethod
    async def last_predictions(self, models: Sequence[str]) -> dict[str, datetime]:
        """The time of each model's newest logged prediction, by name; models with none are left out. A few
        queries for the whole sequence, whatever its length."""

    @abstractmethod
    async def latencies(
        self,
        *,
        model: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100_000,
        arm: tuple[str, str] | None = None,
    ) -> list[float]:
        """The logged latency (ms) of each matching request, the newest `limit`: a block (one batch request)
        counts once, as the serving latency histogram does."""

    @abstractmethod
    async def sample_inputs(
        self,
        *,
        model: str,
        version: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        n: int,
        seed: int | None = None,
    ) -> list[list[Any]]:
        """The feature rows of a uniform random sample, without replacement, of min(n, count) matching
        predictions (every prediction as likely, whether logged alone or in a block), in log order.

        Bounded: the backend reads the matching rows' ids and sizes, but the inputs of at most `n` rows.
        The same `seed` on the same data gives the same sample."""

    @abstractmethod
    async def resolve(self, prediction_ids: Sequence[str]) -> dict[str, PredictionRef]:
        """The logged predictions of these ids, by id; unknown (or malformed) ids are left out. A few
        queries for the whole sequence, whatever its length."""

    @abstractmethod
    async def resolve_requests(self, request_ids: Sequence[str]) -> dict[str, list[PredictionRef]]:
        """Predictions logged with each request id, by request id, at most two per id: one means the id
        names a single prediction, two that it names several (a batch, or a reused id). Unknown ids are
        left out."""

    # --- feedback --------------------------------------------------------------------------------------

    @abstractmethod
    async def add_feedback(
        self, entries: Sequence[FeedbackEntry], *, received_at: datetime, actor: str | None
    ) -> list[str]:
        """Store the entries in one transaction (all or none); return the prediction ids whose current
        value was replaced (already stored, or given earlier in `entries`: the later one wins), once per
        replacement. A concurrent writer of the same prediction is retried, never left with two current
        values."""

    @abstractmethod
    async def feedback_history(self, prediction_id: str) -> list[FeedbackHistoryEntry]:
        """Every actual value received for the prediction, oldest first; the last is current."""

    @abstractmethod
    async def current_feedback(self, prediction_ids: Sequence[str]) -> dict[str, FeedbackHistoryEntry]:
        """The current actual value of each of these predictions that has one, by prediction id (predictions
        without feedback, and unknown ids, are left out). A few queries for the whole sequence."""

    @abstractmethod
    async def labelled(
        self,
        *,
        model: str,
        version: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1_000_000,
        probabilities: bool = True,
    ) -> LabelledPredictions:
        """The matching predictions (by prediction time) that have a current actual value, with it: at most
        `limit`, the newest. `probabilities` False reads none (`probabilities` is then None), for metrics
        that need the labels alone."""
