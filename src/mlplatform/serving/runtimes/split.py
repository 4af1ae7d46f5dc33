"""Two engines that agree, each where it is fastest: a few rows on one, large batches on the other."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from mlplatform.serving.runtimes.base import RawPrediction, Runtime

BATCH_ROWS = 1000  # the batch size the engines are timed on
FASTER = 0.7  # the batch engine must take at most this share of the other's time per row to be worth a split


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds for one row and per row of a `BATCH_ROWS` batch (best of a few runs)."""

    one_row: float
    per_row: float

    def seconds(self, rows: int) -> float:
        """A linear model of a call: a fixed cost and a cost per row."""
        fixed = max(0.0, self.one_row - self.per_row)
        return fixed + self.per_row * rows


def timing(runtime: Runtime, sample: np.ndarray, repeats: int = 3) -> Timing:
    rows = np.resize(sample, (BATCH_ROWS, sample.shape[1]))
    runtime.predict(rows[:1])
    one = min(_seconds(runtime, rows[:1]) for _ in range(repeats * 5))
    batch = min(_seconds(runtime, rows) for _ in range(repeats))
    return Timing(one, batch / BATCH_ROWS)


def _seconds(runtime: Runtime, rows: np.ndarray) -> float:
    started = time.perf_counter()
    runtime.predict(rows)
    return time.perf_counter() - started


def crossover(small: Timing, large: Timing) -> int | None:
    """The row count from which `large` is faster, or None when it is not clearly faster on batches."""
    if large.per_row > FASTER * small.per_row:
        return None
    gap = (large.one_row - large.per_row) - (small.one_row - small.per_row)  # fixed costs
    return max(2, math.ceil(gap / (small.per_row - large.per_row)))


class SplitRuntime(Runtime):
    """`small` predicts inputs of fewer than `threshold` rows and `large` the others. Both must already be
    known to agree (the compiled engine is checked against the native one before it is ever used)."""

    def __init__(self, small: Runtime, large: Runtime, threshold: int) -> None:
        self.small, self.large, self.threshold = small, large, threshold
        self.name = small.name
        self.description = small.description
        self.n_features = small.n_features

    def predict(self, X: np.ndarray) -> RawPrediction:
        return (self.small if len(X) < self.threshold else self.large).predict(X)

    def warm_up(self) -> None:
        self.small.warm_up()
        self.large.warm_up()
