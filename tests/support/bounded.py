"""Bounded waits for fixtures and support code: a teardown that hangs fails fast, naming what it waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
