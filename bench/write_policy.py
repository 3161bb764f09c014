"""Other policies for meshbus.bus.direct's ``write_now``, for benchmarks to weigh its own against
(bench/remote_filter.py ``--write``, bench/plugins.py ``--reference-write``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

ENV = "MESHBUS_BENCH_WRITE"
"""A process started with this set (none, once, first) replaces ``write_now`` at start-up (the bench's
sitecustomize calls ``from_env``)."""

SITECUSTOMIZE = """
try:
    import write_policy
except ImportError:
    pass
else:
    write_policy.from_env()
"""


def replace_write_now(how: str) -> None:
    """In this process, ``write_now`` as ``how`` says: ``none`` declines (every publish through
    nats-py's flusher); ``once`` is its earlier policy, for reference (the first message of a turn
    written to the socket at once, the others of that turn left to the flusher); ``first`` is the
    current policy without its busy rule (a turn's first message written at once even when the last
    turn had several, the rest of the turn written together as it ends). Set as
    ``direct.instead``, which ``write_now`` hands every message to."""
    from meshbus.bus import direct

    wrote: set[int] = set()

    def declined(*_a: Any) -> bool:
        return False

    def once(nc: Any, subject: str, payload: bytes, reply: str, block: bytes) -> bool:
        key = id(nc)
        w = None if key in wrote else direct._writer(nc)
        if w is None:
            return False
        wrote.add(key)
        asyncio.get_running_loop().call_soon(wrote.discard, key)
        line = direct._pub_line(subject, reply, len(block), len(payload))
        w.write(b"".join((line.encode(), block, payload, b"\r\n")))
        nc.stats["out_msgs"] += 1
        return True

    def first(nc: Any, *a: Any) -> bool:
        direct._busy.discard(id(nc))
        return direct.take(nc, *a)

    fn = declined if how == "none" else first if how == "first" else once
    direct.instead = fn  # compiled callers call write_now natively: it hands every message to this


def from_env() -> None:
    how = os.environ.get(ENV, "")
    if how in ("none", "once", "first"):
        replace_write_now(how)
