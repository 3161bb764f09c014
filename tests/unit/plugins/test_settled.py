"""``Settled``: a remote call's future whose plain done callbacks (the exchange's) run as it
completes, while a task awaiting it still resumes through the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshbus.proxy.filters.plugins.settled import Settled

pytestmark = pytest.mark.timeout(10)


async def test_a_plain_done_callback_runs_as_the_result_is_set() -> None:
    fut = Settled()
    seen: list[Any] = []
    assert asyncio.ensure_future(fut) is fut  # what the exchange does with a paused hook's result
    fut.add_done_callback(lambda f: seen.append(f.result()))
    fut.set_result(7)
    assert seen == [7]  # an asyncio.Future would run it a loop pass later
    fut.add_done_callback(lambda f: seen.append("late"))  # added once done: asyncio's way
    assert seen == [7]
    await asyncio.sleep(0)
    assert seen == [7, "late"]


async def test_a_task_awaiting_it_resumes_through_the_loop() -> None:
    fut = Settled()

    async def waits() -> int:
        return await fut + 1

    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0)  # the task now waits on fut (its wake-up added with its context)
    fut.set_result(1)
    assert not task.done()  # not stepped inside this one
    assert await task == 2


async def test_a_raising_callback_goes_to_the_loop_handler_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, c: errors.append(c))
    try:
        fut = Settled()
        seen: list[str] = []

        def boom(_f: object) -> None:
            raise ValueError("boom")

        fut.add_done_callback(boom)
        fut.add_done_callback(lambda f: seen.append("after"))
        fut.set_exception(KeyError("k"))
        assert seen == ["after"] and isinstance(errors[0]["exception"], ValueError)
        assert isinstance(fut.exception(), KeyError)
    finally:
        loop.set_exception_handler(None)


async def test_cancelled_its_callbacks_run_a_pass_later_and_removed_ones_never() -> None:
    fut = Settled()
    seen: list[str] = []

    def removed(_f: object) -> None:
        seen.append("removed")

    fut.add_done_callback(removed)
    fut.add_done_callback(lambda f: seen.append("cancelled" if f.cancelled() else "?"))
    assert fut.remove_done_callback(removed) == 1
    assert fut.cancel() and not fut.cancel()
    assert seen == []  # the canceller is still running
    await asyncio.sleep(0)
    assert seen == ["cancelled"]
