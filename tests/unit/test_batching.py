"""`TurnBatcher`: what one turn of the event loop queues goes out together, and every caller gets its own."""

from __future__ import annotations

import asyncio

import pytest

from mlplatform.batching import TurnBatcher


async def test_one_turn_is_one_batch_and_results_keep_their_order() -> None:
    batches: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        batches.append(items)
        return [item * 10 for item in items]

    batcher: TurnBatcher[int, int] = TurnBatcher(send)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert await batcher.submit(7) == 70  # a later turn: a batch of its own
    assert batches == [[0, 1, 2, 3, 4], [7]]


async def test_a_failed_batch_fails_every_caller_of_it() -> None:
    async def send(items: list[str]) -> list[str]:
        raise ConnectionError("down")

    batcher: TurnBatcher[str, str] = TurnBatcher(send)
    results = await asyncio.gather(*(batcher.submit(k) for k in "abc"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3


async def test_a_caller_that_went_away_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        await release.wait()
        return items

    batcher: TurnBatcher[int, int] = TurnBatcher(send)
    kept, dropped = batcher.submit(1), batcher.submit(2)
    await asyncio.sleep(0)  # the batch is in flight
    dropped.cancel()
    release.set()
    assert await kept == 1
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_close_sends_what_is_queued() -> None:
    sent: list[int] = []

    async def send(items: list[int]) -> list[None]:
        sent.extend(items)
        return [None] * len(items)

    batcher: TurnBatcher[int, None] = TurnBatcher(send)
    batcher.submit(1)
    batcher.submit(2)
    assert batcher.pending == 2
    await batcher.close()
    assert sent == [1, 2] and batcher.pending == 0
