"""Request/reply on the bus without nats-py's event-loop hops, for latency-bound callers (a REMOTE
filter's calls: the proxy and meshbus-filter-host): the writing side. bus/inline.py is the reading
side (``subscribe_inline``, ``add_inline_endpoint``, ``read_inline``) and says why both exist.

- ``write_now`` sends a message when nothing is queued ahead of it in nats-py (the order of SUBs
  and other publishes is kept) and the socket's write buffer is empty (otherwise the flusher's
  ``drain`` is the back-pressure). A quiet connection's message is written at once. A busy one's
  (more than one message in the last turn of the event loop that had any) are written together,
  in one write, as the turn ends (a ``call_soon``: the next pass, before the loop waits for I/O),
  and so are a turn's messages after its first: a write per message costs a system call each, and
  a busy proxy or filter host makes many calls (or replies) a turn (bench/remote_filter.py
  ``--inflight``: writing the first of each turn at once and leaving the rest to nats-py's flusher
  made three times the write calls at 4 calls in flight); the flusher costs a task's wake-up and
  a pass more. When it says it could not, the caller publishes through ``Client.publish``.
  A busy connection's calls are held to the turn's end too, though their callers wait: writing a
  turn's first call at once was weighed (bench/remote_filter.py ``--burst``, 1,000 calls/s sent 2
  or 3 at a time) and lost: p50 +0.02..+0.36 ms in 3 pairs of 3 at bursts of 2, about twice the
  client's write calls and more of the host's (its calls no longer arrive together).

A turn's end is a ``call_soon`` (``_write_turn``): one a message on a quiet connection, a handle
made and run a pass later. A message written while bus/inline.py handles what one read of the same
connection brought (``reading``: a filter host's verdicts, answered as their calls are read) ends
its turn with that read instead, called at once: one connection is read once a loop iteration, so
the read's messages are the turn's (a message from a ready callback before it in the same iteration
started a turn of its own, which its ``call_soon`` ends as before). The host's instructions a call
went from 74.0k to 70.5k so (bench/remote_callgrind.py, paired with the tree before; its system
calls stay one read, one write, one epoll_wait a call: the pass cost no system call there). The
proxy's calls are written from its HTTP connections' reads, several a turn when busy, so their
turns still end by ``call_soon``.

Compiled with mypyc (setup.py NATIVE_MODULES): it runs for every message of a remote filter call on
both sides: interpreted, about 13.6k instructions a message, compiled 11k (bench/remote_callgrind.py;
most of the rest is nats-py's and asyncio's attributes read by name, and uvloop's write and call_soon).
Its compiled callers call it natively, so a benchmark's other policy (bench/write_policy.py) goes in
``instead``, which ``write_now`` hands every message to when set.

It rests on nats-py internals (``Client._status``, ``_pending``, ``_pending_data_size``, ``_transport``,
``_max_payload``, ``stats``) and asyncio's ``StreamWriter._loop`` and ``_transport`` (its ``transport``
property is an interpreted call on every message); pyproject pins nats-py below 3, and
tests/integration/bus/test_direct.py checks on a real nats-server that these paths are the fast ones
with the installed version, so an upgrade that changes them fails there rather than silently going slow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from nats.aio.client import Client

from meshbus.bus import read_end

NO_HEADERS = b""
"""``write_now``'s block for a message without headers (sent as PUB, not HPUB): a remote filter's
calls and verdicts (docs/remote-filters.md), as nats-py parses a header block in pure Python, a few
microseconds on every message the other side reads."""


def header_block(headers: Mapping[str, str]) -> bytes:
    """NATS message headers as written on the wire (made once for headers that never change)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


_CONNECTED: Final = Client.CONNECTED
"""Read once: a class attribute of an interpreted class is a lookup by name on every read."""


_DRAINING: Final = (Client.DRAINING_SUBS, Client.DRAINING_PUBS)


def connected(nc: Client) -> bool:
    """``nc.is_connected``, read natively: the property is two interpreted calls (~1.5k instructions
    on every remote filter call)."""
    status = nc._status
    return status == _CONNECTED or status in _DRAINING


def _writer(nc: Client) -> Any:
    """The client's stream writer when a message may be written now, else None."""
    if nc._status != _CONNECTED or nc._pending_data_size:
        return None
    w = getattr(nc._transport, "_io_writer", None)  # TcpTransport's; other transports: the flusher
    if w is None or w._transport.get_write_buffer_size():
        return None
    return w


_turns: dict[int, list[bytes]] = {}
"""Messages taken in this turn of the event loop, by client (id), to be written as it ends."""
_busy: set[int] = set()
"""Clients (by id) that took more than one message in the last turn they took any."""


class _Reading:
    """The inline read being handled (``reading``): its client (id, 0: none) and, once a message of
    that client started a turn in it, what ``_write_turn`` needs at the read's end."""

    def __init__(self) -> None:
        self.key = 0
        self.nc: Client | None = None
        self.chunks: list[bytes] | None = None
        self.first_written = False


_read: Final = _Reading()


def reading(nc: Client) -> None:
    """bus/inline.py: what one read of ``nc`` brought is about to be handled (``read_done`` after it)."""
    r = _read
    if r.chunks is not None:  # never expected (reads do not nest): an earlier read's turn ends first
        read_done()
    r.key = id(nc)
    r.nc = nc
    read_end.begun()


def read_done() -> None:
    """The read's messages handled: what bus/read_end.py's ``after_read`` queued runs (the read's
    turn still open: what it writes joins it), then a turn they started ends (written, busy rule
    applied)."""
    r = _read
    read_end.ended()
    r.key = 0
    chunks, nc = r.chunks, r.nc
    r.nc = r.chunks = None
    if chunks is not None and nc is not None:
        _write_turn(nc, id(nc), chunks, r.first_written)


def _pub_line(subject: str, reply: str, n: int, size: int) -> str:
    """The protocol line before a message: HPUB with a header block of ``n`` bytes, PUB without."""
    sizes = f"{n} {n + size}" if n else str(size)
    verb = "HPUB" if n else "PUB"
    return f"{verb} {subject} {reply} {sizes}\r\n" if reply else f"{verb} {subject} {sizes}\r\n"


Policy = Callable[[Client, str, bytes, str, bytes], bool]

instead: Policy | None = None
"""Another policy that takes every message in ``write_now``'s place (benchmarks: bench/write_policy.py)."""


def write_now(nc: Client, subject: str, payload: bytes, reply: str, block: bytes) -> bool:
    """Write the message (headers ``block``: a ``header_block``, or b"" for none) to the socket, at once or as this
    turn of the event loop ends (see the module doc), if it can go without waiting behind nats-py;
    False: it was not taken. Subjects are the caller's, checked where they are made."""
    other = instead
    if other is not None:
        return other(nc, subject, payload, reply, block)
    return take(nc, subject, payload, reply, block)


def take(nc: Client, subject: str, payload: bytes, reply: str, block: bytes) -> bool:
    """``write_now``'s own policy (``instead`` aside)."""
    if len(payload) > nc._max_payload:
        return False
    key = id(nc)
    chunks = _turns.get(key)
    at_once = None
    if chunks is None:
        w = _writer(nc)
        if w is None:
            return False
        if key not in _busy:
            at_once = w
        chunks = _turns[key] = []
        r = _read
        if r.key == key:  # the read's end ends the turn (see the module doc)
            r.chunks, r.first_written = chunks, at_once is not None
        else:
            # the writer's loop is the running one: asyncio.get_running_loop() costs a getpid() system call
            w._loop.call_soon(_write_turn, nc, key, chunks, at_once is not None)
    elif nc._pending_data_size:
        return False  # nats-py queued something after the turn's first: what follows goes after it
    line = _pub_line(subject, reply, len(block), len(payload))
    if at_once is not None:
        at_once.write(b"".join((line.encode(), block, payload, b"\r\n")))
    else:
        chunks += (line.encode(), block, payload, b"\r\n")
    stats = nc.stats
    stats["out_msgs"] += 1
    stats["out_bytes"] += len(payload)
    return True


def _write_turn(nc: Client, key: int, chunks: list[bytes], first_written: bool) -> None:
    """The turn's messages not written at once, in one write; ahead of what nats-py queued meanwhile
    (it came after them: its flusher runs later in this pass, woken after this was scheduled)."""
    if _turns.get(key) is chunks:
        del _turns[key]
    if first_written + len(chunks) // 4 > 1:
        _busy.add(key)
    else:
        _busy.discard(key)
    if not chunks:
        return
    data = b"".join(chunks)
    w = getattr(nc._transport, "_io_writer", None) if nc._status == _CONNECTED else None
    if w is not None and not w._transport.is_closing():
        w.write(data)
    else:  # the connection went in this turn: nats-py sends its buffer after a reconnect
        nc._pending.insert(0, data)
        nc._pending_data_size += len(data)


def wrote_directly(nc: Client) -> bool:
    """Whether ``write_now`` would take a message on ``nc`` now (for tests)."""
    if id(nc) in _turns:
        return not nc._pending_data_size
    return _writer(nc) is not None
