"""``Settled``: the future a remote filter call's exchange waits on, whose plain done callbacks run
as it completes rather than a pass of the event loop later.

A remote call's reply is parsed, applied and settled in nats-py's read loop (remote.py); the
exchange then goes on from its done callback (proxy/adapters/exchange.py ``_after_await``). An
``asyncio.Future`` schedules its callbacks with ``call_soon``: the exchange would resume only after
the rest of the loop's pass (the other ready callbacks, then the next wait for I/O's), one more hop
between the reply and the request going upstream. Here a callback added without a ``context`` is
called at once, in the read loop, as nats-py's own subscription callbacks would be; one added with a
context is left to asyncio: tasks add their wake-up with their context (a task must not be stepped
inside another, and the read loop is one), so a coroutine awaiting the future still resumes through
the loop. asyncio's helpers that add theirs without one (gather, shield, wait) only complete other
futures, which is safe at once. What a callback run at once raises goes to the loop's exception
handler, as it would from ``call_soon``. A cancelled future's callbacks are scheduled as asyncio
schedules them (the canceller, the exchange ending, is still running).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import Any


class Settled(asyncio.Future[Any]):
    """An ``asyncio.Future`` whose done callbacks added without a context run as it completes."""

    _now: list[Callable[[Settled], object]] | None = None

    def add_done_callback(self, fn: Callable[[Settled], object], *, context: Context | None = None) -> None:
        if context is not None or self.done():
            super().add_done_callback(fn, context=context)
            return
        if self._now is None:
            self._now = []
        self._now.append(fn)

    def remove_done_callback(self, fn: Callable[[Settled], object]) -> int:
        now = self._now
        n = 0
        if now:
            n = len(now)
            now[:] = [f for f in now if f != fn]
            n -= len(now)
        return n + super().remove_done_callback(fn)

    def set_result(self, result: Any) -> None:
        super().set_result(result)
        self._run_now()

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        self._run_now()

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg):
            return False
        now, self._now = self._now, None
        for fn in now or ():
            self.get_loop().call_soon(fn, self)
        return True

    def _run_now(self) -> None:
        now, self._now = self._now, None
        if not now:
            return
        for fn in now:
            try:
                fn(self)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.get_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc, "future": self}
                )
