"""Other policies for meshbus.bus.direct's ``write_now``, for benchmarks to weigh its own against
(bench/remote_filter.py ``--write``, bench/plugins.py ``--reference-write``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

ENV = "MESHBUS_BENCH_WRITE"
"""A process started with this set (none, once, busy) replaces ``write_now`` at start-up (the bench's
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
    nats-py's flusher); ``once`` and ``busy`` are its earlier policies, for reference: ``once`` wrote
    the first message of a turn to the socket at once and left the others of that turn to the
    flusher; ``busy`` wrote a turn's messages at once while the connection was quiet, and together
    as the turn ended while it was busy (more than one message in the last turn that had any). Replaced where it
    is defined and where the remote filter's two sides imported it."""
    import meshbus.plugins.remote.host as host_mod
    import meshbus.proxy.filters.plugins.remote as remote_mod
    from meshbus.bus import direct

    wrote: set[int] = set()

    def declined(*_a: Any) -> bool:
        return False

    def once(nc: Any, subject: str, payload: bytes, reply: str, block: bytes, _hold: bool = False) -> bool:
        key = id(nc)
        w = None if key in wrote else direct._writer(nc)
        if w is None:
            return False
        wrote.add(key)
        asyncio.get_running_loop().call_soon(wrote.discard, key)
        n = len(block)
        size = f"{n} {n + len(payload)}"
        line = f"HPUB {subject} {reply} {size}\r\n" if reply else f"HPUB {subject} {size}\r\n"
        w.write(b"".join((line.encode(), block, payload, b"\r\n")))
        nc.stats["out_msgs"] += 1
        return True

    fn = declined if how == "none" else once if how == "once" else _busy_rule()
    direct.write_now = fn  # type: ignore[assignment]
    host_mod.write_now = fn  # type: ignore[assignment]
    remote_mod.write_now = fn  # type: ignore[assignment]


def from_env() -> None:
    how = os.environ.get(ENV, "")
    if how in ("none", "once", "busy"):
        replace_write_now(how)


def _busy_rule() -> Any:
    """``write_now`` as it was before Nagle's rule: busy when the last turn had more than one message
    (the caller's ``hold`` is not used)."""
    from meshbus.bus import direct

    turns = direct._turns  # where bench/stages.py looks for held messages
    busy: set[int] = set()

    def write_turn(nc: Any, key: int, chunks: list[bytes], first_written: bool) -> None:
        if turns.get(key) is chunks:
            del turns[key]
        if first_written + len(chunks) // 4 > 1:
            busy.add(key)
        else:
            busy.discard(key)
        if chunks:
            nc._transport._io_writer.write(b"".join(chunks))

    def write_now(
        nc: Any, subject: str, payload: bytes, reply: str, block: bytes, _hold: bool = False
    ) -> bool:
        if len(payload) > nc._max_payload:
            return False
        key = id(nc)
        chunks = turns.get(key)
        at_once = None
        if chunks is None:
            w = direct._writer(nc)
            if w is None:
                return False
            if key not in busy:
                at_once = w
            chunks = turns[key] = []
            asyncio.get_running_loop().call_soon(write_turn, nc, key, chunks, at_once is not None)
        elif nc._pending_data_size:
            return False
        n = len(block)
        size = f"{n} {n + len(payload)}"
        line = f"HPUB {subject} {reply} {size}\r\n" if reply else f"HPUB {subject} {size}\r\n"
        if at_once is not None:
            at_once.write(b"".join((line.encode(), block, payload, b"\r\n")))
        else:
            chunks += (line.encode(), block, payload, b"\r\n")
        nc.stats["out_msgs"] += 1
        return True

    return write_now
