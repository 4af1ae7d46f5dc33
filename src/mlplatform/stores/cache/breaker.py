"""A circuit breaker: stop calling a backend that keeps failing, and try it again after a pause."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed → open after `failures` consecutive failures → half-open after `reset_seconds` → closed.

    Callers ask `allow()` before each call and report the outcome with `record_success()` or
    `record_failure()`. While open, `allow()` is False. Once `reset_seconds` have passed it lets one
    trial call through (half-open); the trial's success closes the circuit, its failure opens it again.
    If a trial never reports (its caller was cancelled), another trial is allowed `reset_seconds` later.
    """

    def __init__(
        self, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self._threshold = failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._since = 0.0

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if now - self._since < self._reset_seconds:
            return False
        self._state = BreakerState.HALF_OPEN
        self._since = now
        return True

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self._threshold
        ):
            self._state = BreakerState.OPEN
            self._since = self._clock()
