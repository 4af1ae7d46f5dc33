"""The background loop every housekeeping task runs on: steps at its interval, a failing step logged and
the loop going on, stop cancelling a step in progress, start twice one loop, and a first wait when asked."""

from __future__ import annotations

import asyncio

import structlog

from mlplatform.periodic import PeriodicTask


async def test_it_steps_at_its_interval_and_goes_on_after_a_failure() -> None:
    steps: list[int] = []

    async def step() -> None:
        steps.append(len(steps))
        if len(steps) == 2:
            raise RuntimeError("database away")

    loop = PeriodicTask("test-loop", step, 0.01, failure="test step failed")
    with structlog.testing.capture_logs() as logs:
        loop.start()
        loop.start()  # one loop, however often started
        async with asyncio.timeout(5):
            while len(steps) < 5:
                await asyncio.sleep(0.005)
        await loop.stop()
    assert not loop.running
    assert [e for e in logs if e["event"] == "test step failed"] == [
        {"event": "test step failed", "log_level": "warning", "error": "RuntimeError: database away"}
    ]
    count = len(steps)
    await asyncio.sleep(0.05)
    assert len(steps) == count  # stopped


async def test_stop_lets_a_step_end_cancels_one_past_its_grace_and_wait_first_waits() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = PeriodicTask("test-loop", step, lambda: 0.2, failure="x", wait_first=True)
    loop.start()
    await asyncio.sleep(0.05)
    assert not started.is_set()  # waits one interval first
    async with asyncio.timeout(5):
        await started.wait()
    await loop.stop(grace=0.05)  # past its grace: cancelled
    assert cancelled.is_set()
    await loop.stop()  # stopping again is harmless

    finished: list[str] = []

    async def short_step() -> None:
        await asyncio.sleep(0.1)
        finished.append("step")

    ending = PeriodicTask("test-loop", short_step, 60, failure="x")
    ending.start()
    await asyncio.sleep(0.02)  # in its step
    await ending.stop()
    assert finished == ["step"]  # the step ended, not cancelled; no second one began


async def test_a_zero_interval_still_yields() -> None:
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1

    loop = PeriodicTask("test-loop", step, 0.0, failure="x")
    loop.start()
    await asyncio.sleep(0.01)  # the event loop gets its turn
    await loop.stop()
    assert steps > 0
