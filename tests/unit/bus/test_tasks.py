"""cancel_and_wait: tasks end for certain, a lost cancellation is repeated, a stuck task is named."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from meshbus.bus.tasks import cancel_and_wait

pytestmark = pytest.mark.timeout(10)


async def _wait_then_idle(fut: asyncio.Future[None], past_wait_for: asyncio.Event) -> None:
    await asyncio.wait_for(fut, 10)
    past_wait_for.set()
    await asyncio.Event().wait()  # a loop waiting for its next event, as MeshAgent._sync_loop does


async def test_a_cancellation_that_wait_for_swallowed_is_repeated() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    past = asyncio.Event()
    task = asyncio.create_task(_wait_then_idle(fut, past), name="agent-sync")
    await asyncio.sleep(0)  # let the task enter wait_for
    fut.set_result(None)  # the reply arrives in the same loop iteration as the cancel
    task.cancel()
    if sys.version_info < (3, 12):
        # Python 3.11's wait_for returns the result and drops the cancellation: the task goes on.
        await past.wait()
        assert not task.done()
    await cancel_and_wait([task], timeout=2)
    assert task.cancelled()


async def test_a_task_that_will_not_end_is_named_in_the_timeout() -> None:
    stop = False
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not stop:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await started.wait()
    with pytest.raises(TimeoutError, match="waiting for task\\(s\\) stubborn-loop to end"):
        await cancel_and_wait([task], timeout=0.5)
    stop = True
    await cancel_and_wait([task], timeout=2)
    assert task.done()


async def test_a_task_that_had_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails(), name="fails")
    idle = asyncio.create_task(asyncio.Event().wait(), name="idle")
    await asyncio.wait([failed])
    with caplog.at_level(logging.ERROR, logger="meshbus.bus.tasks"):
        await cancel_and_wait([failed, idle], timeout=2)
    assert idle.cancelled()
    assert "task fails had failed: RuntimeError('boom')" in caplog.text
