"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from mlplatform.stores.cache.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, reset_seconds=2.0, clock=clock)


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read through a call, so mypy does not keep an earlier assert's narrowing across state changes."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_starts_closed_and_allows_calls(breaker: CircuitBreaker) -> None:
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_opens_after_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    fail(breaker, 1)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


def test_stays_open_until_the_reset_time(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(1.99)
    assert not breaker.allow()
    assert state(breaker) is BreakerState.OPEN


def test_half_open_lets_exactly_one_trial_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()
    assert not breaker.allow()


def test_successful_trial_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow()
    assert breaker.allow()


def test_failed_trial_reopens_for_another_full_period(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(2.5)
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    clock.advance(1.5)
    assert not breaker.allow()
    clock.advance(0.5)
    assert breaker.allow()
    assert state(breaker) is BreakerState.HALF_OPEN


def test_a_trial_that_never_reports_does_not_wedge_the_breaker(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.allow()
    clock.advance(1.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_late_failures_while_open_do_not_extend_the_wait(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(1.5)
    breaker.record_failure()
    clock.advance(0.5)
    assert breaker.allow()


def test_success_while_open_closes(breaker: CircuitBreaker) -> None:
    fail(breaker, 3)
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_one_failure_threshold(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failures=1, reset_seconds=0.5, clock=clock)
    fail(breaker, 1)
    assert state(breaker) is BreakerState.OPEN


@pytest.mark.parametrize(("failures", "reset"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_bad_parameters(failures: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=failures, reset_seconds=reset)
