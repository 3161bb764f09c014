"""Ending background tasks for certain, within a deadline that names what did not end.

Every component stops its loops the same way: cancel them, then wait until they have ended. A plain
``task.cancel(); await task`` can wait for ever on Python 3.11: its `asyncio.wait_for` (which nats-py's
``request`` uses) returns the result instead of raising `CancelledError` when the cancellation and the
result arrive in the same loop iteration. The task then carries on, typically back to waiting for its
next event, and the cancel is lost. `cancel_and_wait` cancels again until the task has ended, and
raises a `TimeoutError` naming the tasks still running once the deadline passes, so a stop that cannot
finish fails fast and says what it waited for instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.2
"""Seconds a cancelled task gets to end (its ``finally`` blocks run) before it is cancelled again."""


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, timeout: float = 10.0, logger: logging.Logger | None = None
) -> None:
    """Cancel ``tasks`` and return once every one has ended.

    A task that ended with an exception other than the cancellation has it logged (it is not
    re-raised: stopping must go on). TimeoutError, naming the tasks, if they outlive ``timeout``.
    """
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        left = deadline - loop.time()
        if left <= 0:
            names = ", ".join(sorted(t.get_name() for t in pending))
            raise TimeoutError(f"meshbus: waiting for task(s) {names} to end after cancelling them")
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY, left))
    for t in tasks:
        if not t.cancelled() and (exc := t.exception()) is not None:
            (logger or log).error("task %s had failed: %r", t.get_name(), exc, exc_info=exc)
