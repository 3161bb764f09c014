"""Upstream writes held until the event loop has handled every ready socket, then sent together.

uvloop sends each ``transport.write`` at once. Under load one loop iteration handles many ready
sockets, and a send per request wakes the upstream process once per request: on a quiet core that
is an inter-processor interrupt each time, about as costly as the send itself. Holding the request
writes until the iteration's events are handled wakes each upstream once per iteration instead; its
answers then come back together, and the responses to clients go out in one burst as well (one
wake-up of the client for many responses), so client-side writes stay immediate. Measured on the
bench (wrk -c50 through one worker): kernel time per request -1.3 us, user time unchanged. Holding
the client-side writes too saved no more kernel time and cost ~1 us of Python per request.
At low load an iteration handles one socket and the write leaves right after it.

A write made as a read of a bus connection ends (meshbus.bus.read_end's ``after_read``: a request a
remote filter's verdict let go on) is sent as that read ends, with the other writes of its
requests, not in the ``call_soon``: the verdict's read is the iteration's event for those requests,
and a pass more before their upstream write was an extra ``epoll_wait`` a remote request.

Order is kept per transport (every write goes through the wrapper while it exists), ``close`` sends
what is held first, ``abort`` drops it, and ``get_write_buffer_size`` counts it, so the protocol
above sees an ordinary transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from meshbus.bus.read_end import after_read

log = logging.getLogger("meshbus.proxy")


class WriteBatch:
    """The transports of one loop holding writes; flushed by one ``call_soon`` per loop iteration."""

    __slots__ = ("_call_soon", "_flush", "dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.dirty: list[BatchedTransport] = []  # the transports append themselves on their first write
        self._flush = self.flush  # one bound method, not one per scheduled flush
        # bound once: compiled, ``loop.call_soon`` is looked up by name on the loop's type each call
        self._call_soon: Callable[..., object] = loop.call_soon

    def schedule(self) -> None:
        # Ready callbacks run after the I/O callbacks of the current iteration (uvloop and asyncio
        # alike), so the flush sees every write the iteration made.
        if not after_read(self.flush_read, None):
            self._call_soon(self._flush)

    def flush_read(self, _: object) -> None:
        """The flush as a bus read ends (``after_read``), after the requests it resumed wrote."""
        self.flush()

    def flush(self) -> None:
        dirty = self.dirty
        # A write made while flushing (none is expected) appends to the list being walked: still sent.
        for t in dirty:
            t.flush()
        dirty.clear()


class BatchedTransport:
    """A transport whose ``write`` is held until the loop iteration ends (see the module doc).

    Everything but writing and closing is the wrapped transport's (``__getattr__``)."""

    __slots__ = ("_batch", "_held", "_write", "transport")

    def __init__(self, transport: Any, batch: WriteBatch) -> None:
        self.transport = transport
        self._write = transport.write  # bound once: compiled, ``transport.write`` is a lookup by name
        self._batch = batch
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            batch = self._batch
            if not batch.dirty:
                batch.schedule()
            batch.dirty.append(self)
        else:
            self._held = held + data  # rare: a second write to one socket in one iteration

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            try:
                self._write(held)
            except Exception as exc:  # the connection died while its bytes were held
                # uvloop refuses writes to a transport closed under us (peer reset in the same
                # iteration); the protocol hears connection_lost, and the rest of the batch must go out.
                log.debug("held write dropped: %s", exc)

    def writelines(self, data: list[bytes]) -> None:
        for d in data:
            self.write(d)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return int(self.transport.get_write_buffer_size()) + (len(held) if held is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)
