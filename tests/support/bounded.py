"""Bounded waits for fixtures and support code: a teardown that hangs fails fast, naming what it waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def within(what: str, step: Awaitable[T], timeout: float = 15.0) -> T:
    """Await ``step``; TimeoutError("waiting for <what>") if it takes longer than ``timeout``.

    A TimeoutError that ``step`` raised itself (it may name something more precise) passes unchanged.
    A step that swallowed the cancellation and returned late fails as well: it hung all the same."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            result = await step
    except TimeoutError:
        if deadline.expired():
            raise TimeoutError(f"waiting for {what} (more than {timeout:g}s)") from None
        raise
    if deadline.expired():
        raise TimeoutError(f"waiting for {what} (more than {timeout:g}s; it ignored the cancellation)")
    return result


async def eventually(what: str, probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll the async ``probe`` (every 20 ms) until it returns True; AssertionError naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
