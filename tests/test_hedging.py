"""Hedged reads: a slow request is sent again and the first answer is used; the budget
bounds how often.  A source whose requests the test releases by hand, so that nothing
here depends on how long anything takes: a threshold of zero seconds hedges a read at
the timer's first pass, and the loop is turned until the source has done what it will.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from fficube.sources.base import read_batch
from fficube.sources.policy import HedgePolicy, IOPolicy, RetryPolicy
from fficube.sources.remote import RemoteSource

DATA = bytes(range(256)) * 128


class Scripted(RemoteSource):
    """Answers from ``DATA``; the first request of each range waits for ``release``
    (the slow GET), later ones (its hedge) answer at once, unless ``hedges_fail``."""

    def __init__(self, hedge: HedgePolicy, concurrency: int = 32) -> None:
        super().__init__(concurrency, sizes={"f": len(DATA)},
                         policy=IOPolicy(retry=RetryPolicy(attempts=1), hedge=hedge))
        self.release = asyncio.Event()
        self.sent: dict[int, int] = {}
        self.cancelled = 0
        self.hedges_fail = False

    async def _range_into(self, path: str, start: int, buf: memoryview, etag: str | None) -> int:
        attempt = self.sent[start] = self.sent.get(start, 0) + 1
        if attempt == 1:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        elif self.hedges_fail:
            raise ConnectionError("hedge failed")
        await asyncio.sleep(0)
        buf[:] = DATA[start : start + len(buf)]
        return len(buf)


async def turn(times: int = 200) -> None:
    """Run the event loop ``times`` passes (timers due now included)."""
    for _ in range(times):
        await asyncio.sleep(0)


async def settle(source: Scripted, work: Awaitable[None]) -> None:
    task = asyncio.ensure_future(work)
    await turn()
    source.release.set()
    await task


NOW = HedgePolicy(initial=0.0)  # every read is due for a hedge at the timer's first pass


async def test_a_slow_read_takes_its_hedges_answer_and_the_slow_request_is_cancelled() -> None:
    source = Scripted(NOW)
    buf = memoryview(bytearray(1000))
    await source.readinto("f", 3000, buf)  # never released: only the hedge answers
    assert bytes(buf) == DATA[3000:4000]
    # the cancellation that brought the hedge's answer is taken back: none is left over
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert source.stats.hedges == 1 and source.stats.requests == 2 and source.cancelled == 1
    assert not source._watched and source._hedging == 0 and source._in_flight == 0


async def test_the_hedge_budget_bounds_the_hedges_however_slow_the_store() -> None:
    policy = HedgePolicy(initial=0.0, budget=0.05, burst=2, share=1.0)
    source = Scripted(policy, concurrency=200)
    bufs = [memoryview(bytearray(100)) for _ in range(200)]
    requests = [("f", 100 * i, buf) for i, buf in enumerate(bufs)]
    await settle(source, read_batch(source, requests))
    # 200 reads, every one slow: 5% of them (and the burst) sent twice, no more
    assert source.stats.hedges == policy.allowed(200) == 12
    assert source.stats.requests == 200 + 12 == sum(source.sent.values())
    assert all(bytes(buf) == DATA[100 * i : 100 * i + 100] for i, buf in enumerate(bufs))


async def test_hedges_in_flight_are_capped_by_their_share_of_the_concurrency() -> None:
    source = Scripted(HedgePolicy(initial=0.0, budget=1.0, share=0.25), concurrency=8)
    seen = []

    async def watch() -> None:
        while not source.release.is_set():
            seen.append(source._hedging)
            await asyncio.sleep(0)

    requests = [("f", 10 * i, memoryview(bytearray(10))) for i in range(8)]
    watcher = asyncio.ensure_future(watch())
    source.hedges_fail = True  # failed hedges are forgotten: the first requests answer
    await settle(source, read_batch(source, requests))
    await watcher
    assert max(seen) == 2 and source.stats.hedges >= 2


async def test_a_failed_hedge_leaves_the_first_request_to_answer() -> None:
    source = Scripted(NOW)
    source.hedges_fail = True
    buf = memoryview(bytearray(10))
    await settle(source, source.readinto("f", 50, buf))
    assert bytes(buf) == DATA[50:60] and source.stats.hedges >= 1 and source.cancelled == 0


async def test_without_hedging_a_slow_read_is_only_waited_for() -> None:
    source = Scripted(HedgePolicy(enabled=False, initial=0.0))
    buf = memoryview(bytearray(10))
    await settle(source, source.readinto("f", 50, buf))
    assert bytes(buf) == DATA[50:60] and source.stats.hedges == 0 and source.stats.requests == 1


async def test_a_read_cancelled_from_outside_takes_its_hedge_down_with_it() -> None:
    class Stuck(Scripted):  # the hedge never answers either
        async def _range_into(self, path: str, start: int, buf: memoryview, etag: str | None) -> int:
            self.sent[start] = self.sent.get(start, 0) + 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return 0

    source = Stuck(NOW)
    task = asyncio.ensure_future(source.readinto("f", 0, memoryview(bytearray(10))))
    await turn()
    assert source.stats.hedges == 1 and source._hedging == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.cancelled == 2 and source._hedging == 0 and not source._watched


async def test_a_hedge_answering_as_the_first_request_fails_still_counts_as_the_answer() -> None:
    """The first request fails on its own while its hedge's answer is being delivered:
    the answer is used, and no cancellation is left to hit the reader's next await."""

    class Failing(Scripted):
        async def _range_into(self, path: str, start: int, buf: memoryview, etag: str | None) -> int:
            attempt = self.sent[start] = self.sent.get(start, 0) + 1
            if attempt == 1:
                await self.release.wait()
                raise ConnectionError("first request failed")
            self.release.set()  # the first fails in the same pass as this answers
            buf[:] = DATA[start : start + len(buf)]
            return len(buf)

    source = Failing(NOW)
    buf = memoryview(bytearray(10))
    await source.readinto("f", 70, buf)
    assert bytes(buf) == DATA[70:80]
    await asyncio.sleep(0)  # a stray cancellation would land here
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
