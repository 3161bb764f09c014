"""The listener's shared deadline timer: never early, at most a resolution step (+ loop rounding) late,
re-armed earlier when an earlier deadline arrives, and silent for exchanges that finished."""

from __future__ import annotations

import asyncio

import pytest

from meshbus.proxy.adapters.listener import Deadlines

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


class FakeExchange:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, dl_at: float, fired: asyncio.Event | None = None
    ) -> None:
        self.loop = loop
        self.dl_at = dl_at
        self.fired_at: float | None = None
        self.event = fired

    def _on_deadline(self) -> None:
        self.fired_at = self.loop.time()
        if self.event is not None:
            self.event.set()


async def test_fires_after_the_deadline_and_earlier_ones_first() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop, resolution=0.01)
    late_done, early_done = asyncio.Event(), asyncio.Event()
    now = loop.time()
    late = FakeExchange(loop, now + 0.15, late_done)
    early = FakeExchange(loop, now + 0.05, early_done)
    d.add(late, late.dl_at)
    d.add(early, early.dl_at)  # earlier than the armed sweep: the timer must move
    await asyncio.wait_for(early_done.wait(), 2)
    assert late.fired_at is None
    await asyncio.wait_for(late_done.wait(), 2)
    assert early.fired_at is not None and late.fired_at is not None
    assert early.fired_at >= early.dl_at - 0.001  # never early (beyond the loop's ms rounding)
    assert early.fired_at < late.dl_at
    assert late.fired_at >= late.dl_at - 0.001
    assert not d.waiting
    d.close()


async def test_a_discarded_exchange_is_not_called() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(loop, resolution=0.01)
    other_done = asyncio.Event()
    now = loop.time()
    gone = FakeExchange(loop, now + 0.03)
    other = FakeExchange(loop, now + 0.06, other_done)
    d.add(gone, gone.dl_at)
    d.add(other, other.dl_at)
    d.discard(gone)  # finished before its deadline
    await asyncio.wait_for(other_done.wait(), 2)
    assert gone.fired_at is None
    d.close()
