"""What runs as an inline read of a bus connection ends (``after_read``): the proxy resumes there a
request a REMOTE filter's verdict let go on, and sends the upstream writes that made
(proxy/adapters/write_batch.py), instead of a pass of the event loop later each.

bus/inline.py's read brackets the handling of one read (``begun`` / ``ended``, called through
bus/direct.py's ``reading`` / ``read_done``, whose turn of writes a message written here joins).
A module of its own, without nats-py: every proxy worker's write batch reads it, and a worker
that never speaks NATS does not import the NATS client (tests/unit/proxy/test_worker_imports.py).

Compiled with mypyc (setup.py NATIVE_MODULES): called on every remote filter call and every
upstream write batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)


class _Read:
    """Whether an inline read is being handled, and what is to run as it ends."""

    def __init__(self) -> None:
        self.active = False
        self.queued: list[tuple[Callable[[Any], object], Any]] = []


_read: Final = _Read()


def after_read(fn: Callable[[Any], object], arg: Any) -> bool:
    """Call ``fn(arg)`` as the inline read being handled ends: after every message it brought was
    handed over (none waits behind what ``fn`` does), before its turn of writes is written (a
    message ``fn`` writes to the same connection joins it). What ``fn`` raises is logged, never
    let into the read. False: no read is being handled (the caller runs it its own way)."""
    r = _read
    if not r.active:
        return False
    r.queued.append((fn, arg))
    return True


def begun() -> None:
    """An inline read's messages are about to be handed over."""
    _read.active = True


def ended() -> None:
    """The read's messages were handed over: what ``after_read`` queued runs, in order."""
    r = _read
    queued = r.queued
    if queued:
        i = 0
        while i < len(queued):  # what runs may queue more (a request's upstream write: its flush)
            fn, arg = queued[i]
            i += 1
            try:
                fn(arg)
            except Exception:
                log.exception("handling the end of a read failed")
        queued.clear()
    r.active = False
