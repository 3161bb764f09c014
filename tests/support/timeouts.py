"""pytest-timeout that also ends async fixture teardown, and says what the event loop waited for.

pytest-timeout's signal method raises `Failed` from SIGALRM in whatever Python code runs at that
moment. When that is a step of an asyncio task (a fixture's teardown awaiting a background task, say)
asyncio stores the exception in that task, since only SystemExit and KeyboardInterrupt leave a task:
the timeout is lost and the run hangs (a full run once hung 13 minutes in a fixture's teardown). This
plugin takes over pytest-timeout's timer (its ``pytest_timeout_set_timer`` hook) and raises
`TestTimeout`, a SystemExit, which asyncio lets out of its loop (from a callback, between two task
steps, when a loop is running) and pytest reports as the test's failure. Its message names the phase and the chain of awaits the loop was stuck in; the terminal
gets every task's chain and every thread's stack. If the rest of the teardown hangs as well, the
timer fires again after `GRACE` seconds, and a third time kills this run's child processes and exits.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import inspect
import os
import signal
import sys
import threading
import traceback
from collections.abc import Generator, Iterator
from types import FrameType
from typing import Any

import pytest

from .children import kill_children

GRACE = 10.0
"""Seconds the rest of a timed-out test's teardown gets before the timer fires again."""
LAST_RESORT = 3
"""On this firing the run is beyond saving: dump, kill the child processes, exit."""

PHASE = pytest.StashKey[str]()


class TestTimeout(SystemExit):
    """The test (setup, call or teardown) outlived its timeout."""

    __test__ = False  # not a test class, whatever its name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[PHASE] = "setup"
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[PHASE] = "call"
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[PHASE] = "teardown"
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's thread method: it dumps and exits by itself
    fired = 0

    def expired(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        fired += 1
        phase = item.stash.get(PHASE, "setup")
        head = f"Timeout (>{settings.timeout:g}s) in {phase} of {item.nodeid}"
        if fired > 1:
            head += f", and its teardown still hung {GRACE:g}s later"
        report = describe_loop()
        write = sys.stderr.write
        write(f"\n{'+' * 30} {head} {'+' * 30}\n{report.full}{thread_stacks()}")
        if fired >= LAST_RESORT:
            killed = kill_children()
            write(f"killed child processes {killed}; exiting\n")
            sys.stderr.flush()
            os._exit(1)
        signal.setitimer(signal.ITIMER_REAL, GRACE)
        error = TestTimeout(f"{head}; {report.stuck}")
        if report.loop is not None and fired == 1:
            # Raised here, it would land in whichever task step runs now, where it unbalances CPython
            # 3.11's recursion counter (a SystemError at the next compile). From a callback it leaves
            # run_until_complete between two steps. A loop that never gets there meets the next firing.
            report.loop.call_soon_threadsafe(_raise, error)
            return
        raise error

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's cancel hook reads it
    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


def _raise(error: BaseException) -> None:
    raise error


class LoopReport:
    def __init__(self, loop: asyncio.AbstractEventLoop | None, stuck: str, full: str) -> None:
        self.loop, self.stuck, self.full = loop, stuck, full


def describe_loop() -> LoopReport:
    """What the event loop running in this thread waits for: the chain of awaits from the task that
    runs the test or fixture down to the innermost wait, and a summary of every task."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return LoopReport(None, "no event loop was running (a blocking call: see the traceback)", "")
    tasks = asyncio.all_tasks(loop)
    awaited = {id(w) for t in tasks if isinstance(w := getattr(t, "_fut_waiter", None), asyncio.Task)}
    roots = [t for t in tasks if id(t) not in awaited and _runs_test_code(t)]
    stuck = "; ".join(" -> ".join(_chain(t)) for t in roots) or "no task of the test was pending"
    lines = collections.Counter(" -> ".join(_chain(t, follow=False)) for t in tasks)
    full = "event loop tasks:\n" + "".join(
        f"  {n} x {line}\n" if n > 1 else f"  {line}\n" for line, n in sorted(lines.items())
    )
    return LoopReport(loop, f"waiting in {stuck}", full)


def _runs_test_code(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and ("pytest_asyncio" in code.co_filename or "/tests/" in code.co_filename)


def _state(task: asyncio.Task[Any]) -> str:
    return "cancelling" if task.cancelling() else "pending"


def _chain(task: asyncio.Task[Any], follow: bool = True) -> list[str]:
    """``task name: coroutine (file:line) -> ...``, into the task it awaits when ``follow``."""
    parts = [f"task {task.get_name()!r} [{_state(task)}]"]
    parts.extend(_frames(task.get_coro()))
    waiter = getattr(task, "_fut_waiter", None)
    if follow and isinstance(waiter, asyncio.Task):
        parts.extend(_chain(waiter))
    return parts


def _frames(coro: Any) -> Iterator[str]:
    while coro is not None:
        if type(coro).__name__ in ("async_generator_asend", "async_generator_athrow"):
            # an async generator fixture's step: it does not expose its generator but refers to it
            coro = next((g for g in gc.get_referents(coro) if inspect.isasyncgen(g)), None)
            continue
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is None:
            return
        yield f"{coro.__qualname__} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})"
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )


def thread_stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    out = []
    for ident, frame in sys._current_frames().items():
        if ident != me:
            out.append(f"thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame)))
    return "".join(out)
