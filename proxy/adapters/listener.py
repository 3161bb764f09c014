"""Downstream connections: an asyncio Protocol around ``http1.RequestSession`` and ``exchange.Exchange``.

Contract with exchange.Exchange: the listener makes one Exchange per request head and calls
``begin()`` when that request's turn comes, so pipelined requests are answered strictly in order
(later ones wait, bodies buffered, and reading pauses when too many wait). The exchange answers
through the connection's stream calls (contracts.Downstream: ``send_head``, ``send_data``,
``send_end``, ``send_local``, ...), which hold all of HTTP/1's response framing (chunked or
close-delimited bodies, ``Connection: close``, 100 Continue, a response head held back to leave
with the first body bytes), and calls ``exchange_done(ex, keep_alive)`` once. An HTTP/2 stream
implements the same calls with frames; the exchange and the filter chain do not change.

Backpressure: when this transport's write buffer passes its high-water mark (``pause_writing``), the
upstream socket feeding it stops being read; reading from the client pauses for any of several
reasons (upstream write buffer full, too much body waiting, too many pipelined requests), tracked
by name so one resume does not undo another's pause.

Timeouts are checked by the server's once-per-tick sweep, not a timer per request: a head that
stays incomplete longer than ``header_timeout`` gets 408 and a close (slowloris); a keep-alive
connection idle longer than ``idle_timeout`` is closed.

A request that fails to parse ends reading (``_protocol_error``), as Envoy 1.40 does (measured): the
requests the session gave before the error are answered in order, then the failed one gets 400/431
and a close, through an exchange like every local reply, so that it is logged and counted with DPE
and Envoy's response code details (one is made for a head that failed: no method, path or authority
is logged); a failure in the body of a request whose response has gone already closes the
connection without a second response. A response that goes out before its request body has all
come (an early 413, or any reply while the body still arrives) says ``Connection: close``, as Envoy's
does; the connection half-closes after it and drops what the client still sends until the client
closes, for at most ``LINGER`` (Envoy's delayed close), so that the close does not reset the response.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.adapters.exchange import Exchange
from meshbus.proxy.codec.http1 import (
    BODY,
    CHUNKED,
    END,
    HEAD,
    LAST_CHUNK,
    NO_BODY,
    UNTIL_EOF,
    ProtocolError,
    RequestHead,
    RequestSession,
    chunk,
    local_reply,
    serialize_response_head,
)
from meshbus.proxy.filters.observe import HopTelemetry

if TYPE_CHECKING:
    from meshbus.proxy.adapters.contracts import Pools, Server
    from meshbus.proxy.build.runtime import ProxyRuntime
    from meshbus.proxy.core.cluster import Cluster
    from meshbus.proxy.core.routing import RouteTable

log = logging.getLogger(__name__)

MAX_PIPELINED: Final = 32
CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE_LINE: Final = b"connection: close\r\n\r\n"
# Envoy's delayed_close_timeout default: how long a connection answered before its request body
# ended reads (and drops) what the client still sends before it closes anyway
LINGER: Final = 1.0


class Deadlines:
    """Request deadlines served by one loop timer per listener, not a timer per request.

    An exchange with a deadline sits in a set while it waits (a request costs a set add and discard,
    cheaper than a loop TimerHandle plus its cancel). One timer is armed for the earliest deadline
    added, rounded up to ``resolution`` so neighbours share a sweep; the sweep calls ``_on_deadline()``
    of every exchange whose ``dl_at`` has passed and re-arms for the earliest left. ``dl_at`` is in
    ``ListenerContext.now`` time (monotonic), which the loop's clock never runs ahead of.
    Deadlines fire up to ``resolution`` late, never early, well inside Envoy's own slack. Requests that
    finish first leave the set, so under load the timer mostly fires at long-gone deadlines and finds
    little to do: a sweep per route timeout, not one per 10 ms.
    """

    __slots__ = ("handle", "loop", "resolution", "waiting", "when")

    def __init__(self, loop: Any, resolution: float = 0.01) -> None:
        self.loop = loop
        self.resolution = resolution
        self.waiting: set[Any] = set()
        self.handle: Any = None
        self.when = 0.0  # loop time the armed sweep runs at

    def add(self, ex: Any, at: float) -> None:
        """Watch ``ex`` (again) for its ``dl_at``, ``at``; call after setting or lowering it. ``at`` is
        passed in because ``ex`` is Any here: reading its field would be a lookup by name per request."""
        self.waiting.add(ex)
        if self.handle is None or at < self.when - self.resolution:
            self._arm(at)

    def discard(self, ex: Any) -> None:
        self.waiting.discard(ex)

    def _arm(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        res = self.resolution
        self.when = when = math.ceil(at / res) * res
        self.handle = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self.handle = None
        waiting = self.waiting
        # The same 1 ms slack as core.attempts.SLACK (loop timers are ms-rounded): what it finds due,
        # we call; what we leave, it would leave too, so nothing re-arms in a spin.
        now = self.loop.time() + 0.001
        due = [ex for ex in waiting if ex.dl_at <= now]
        for ex in due:
            waiting.discard(ex)
            try:
                ex._on_deadline()
            except Exception:  # one request's bug must not skip the others' timeouts
                log.exception("timeout callback failed")
        if waiting and self.handle is None:
            self._arm(max(min(ex.dl_at for ex in waiting), now))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class LiveState:
    """What requests read of their server that changes while it runs: the live runtime, whether it
    drains, the sweep's coarse clock. The server (adapters/server.py ProxyServer) owns one (its
    ``runtime`` property reads and swaps it there), and its listener contexts share it: native
    fields, read natively by the compiled request path, where a read by name on the server (a Python
    class) cost a type-cache and an instance-dict lookup, six of them a request (callgrind)."""

    __slots__ = ("clock", "draining", "runtime")

    def __init__(self, runtime: ProxyRuntime | None = None, clock: float = 0.0) -> None:
        self.runtime: Any = runtime  # None until the server's first load
        self.draining = False
        self.clock = clock  # loop time of the last timeouts sweep


class ListenerContext:
    """Shared by every exchange of one listener in one worker."""

    def __init__(self, server: Server, direction: str) -> None:
        self.server = server
        self.live: LiveState = server.live
        self.pools: Pools = server.pools  # the server's, made once with it
        self.direction = direction  # "outbound" | "inbound"
        self.loop = server.loop
        # The request path's clock (attempts, deadlines, outlier feedback); tests give a fake one.
        self.now: Callable[[], float] = time.monotonic
        self.deadlines = Deadlines(server.loop)
        self.tele = HopTelemetry(server, direction)  # the STATS phase: traces, metrics, access log
        self.mirrors_in_flight = 0
        self.mirrors_dropped = 0
        # The runtime the last request saw, and what requests read from it, in typed fields: the
        # runtime is a Python object whose attributes the compiled path reads by name, and a by-name
        # read costs 400-600 instructions whenever it misses CPython's type attribute cache (a
        # collision that depends on the process's string hash seed). Rebound when the server swaps it.
        self.runtime: Any = None
        self.routes: RouteTable | None = None  # this listener's table (outbound or inbound)
        # a dict: compiled, ``get`` on a Mapping is a method call by name (~400 instructions a request)
        self.clusters: dict[str, Cluster] = {}

    def bind(self, runtime: Any) -> None:
        """Read ``runtime``'s route table and clusters once, for every request until the next swap."""
        self.routes = runtime.outbound if self.direction == "outbound" else runtime.inbound
        clusters = runtime.clusters
        self.clusters = clusters if isinstance(clusters, dict) else dict(clusters)
        self.runtime = runtime


def _refuse(ex: Exchange, exc: ProtocolError) -> None:
    """Answer ``ex`` with ``exc``'s status and a close: DPE and Envoy's response code details."""
    if exc.status == 431:
        ex.on_downstream_error(431, "request header fields too large\n", "http1.headers_too_large")
    else:
        ex.on_downstream_error(exc.status, "bad request\n", "http1.codec_error")


def _unparsed_head() -> RequestHead:
    """The head of a request refused before its head was parsed: nothing of it is known."""
    return RequestHead("", "", "1.1", [], {}, False, False, NO_BODY, 0)


class DownstreamConnection(asyncio.Protocol):
    # ``transport.write``, bound once in connection_made (read before, it raises AttributeError): compiled,
    # ``self.transport.write(...)`` looks the method up by name on every response (the transport is
    # uvloop's, or the TLS stream: not native here)
    _write: Callable[[bytes], object]

    __slots__ = (
        "_write",
        "chunk_out",
        "closed",
        "ctx",
        "current",
        "failed",
        "head_since",
        "idle_since",
        "linger",
        "out",
        "parsing",
        "paused",
        "peer_ip",
        "peer_ip_bytes",
        "peer_principal",
        "queue",
        "session",
        "transport",
        "tunnel",
        "upgrade_buf",
        "write_paused",
    )

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.session = RequestSession(ctx.server.config.max_header_bytes)
        self.current: Exchange | None = None
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.paused: set[str] = set()
        self.write_paused = False
        self.closed = False
        self.tunnel: Any = None
        self.upgrade_buf: list[bytes] | None = None
        self.peer_ip = ""
        self.peer_ip_bytes = b""  # for the X-Forwarded-For line of pass-through heads
        self.peer_principal: str | None = None  # verified SPIFFE ID of an mTLS peer (proxy/tls/mtls.py)
        self.head_since = 0.0
        self.idle_since = 0.0
        self.out: bytes | None = None  # the current response's head, held back for its first body bytes
        self.chunk_out = False  # the current response's body goes out chunked
        self.failed: ProtocolError | None = None  # reading ended in this error (see _protocol_error)
        self.linger: asyncio.TimerHandle | None = None  # the close after a linger (_linger)

    # ---- asyncio callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write = self.transport.write
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        self.peer_ip_bytes = self.peer_ip.encode("latin-1")
        server = self.ctx.server
        server.connections.add(self)
        # Until the first byte, the connection counts as idle-waiting-for-a-head.
        self.head_since = self.idle_since = self.ctx.live.clock

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.upgrade_buf is not None:
            self.upgrade_buf.append(data)  # tunnel bytes before the upstream said 101
            return
        if self.closed:
            return
        was_idle = not self.session.in_head
        err: ProtocolError | None = None
        try:
            events = self.session.feed(data)
        except ProtocolError as exc:
            err = exc
            events = exc.events  # what the read held before the error is taken first, in order
        for kind, payload in events:
            if self.closed:
                return
            if kind == BODY:
                self.parsing.on_request_body(payload)  # type: ignore[union-attr]
            elif kind == HEAD:
                ex = Exchange(self, payload, self.ctx, self.peer_ip, self.peer_ip_bytes)
                ex.dn = self
                self.parsing = ex
                if self.current is None:
                    self.current = ex
                    ex.begin()
                else:
                    self.queue.append(ex)
                    if len(self.queue) >= MAX_PIPELINED:
                        self.pause("pipeline")
            elif kind == END:
                p = self.parsing
                if not p.req_done:  # type: ignore[union-attr]  # a body-less request was done at its head
                    p.on_request_end()  # type: ignore[union-attr]
            else:  # UPGRADE: what follows the head belongs to the tunnel
                self.upgrade_buf = [payload] if payload else []
                last = self.parsing
                if last is not None and (last.head.method == "CONNECT" or not last.head.upgrade):
                    self.upgrade_buf = None
                if last is not None and not last.req_done:
                    last.on_request_end()
                return
        if err is not None:
            if not self.closed:
                self._protocol_error(err)
            return
        if was_idle and self.session.in_head:
            self.head_since = self.ctx.live.clock

    def eof_received(self) -> bool | None:
        # A client half-close: answer what is in flight, then close (no keep-alive after EOF).
        if self.current is None:
            return None
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self.ctx.server.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        ex = self.current
        if ex is not None:
            self.current = None
            ex.on_downstream_lost()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.current
        if ex is not None:
            ex.on_downstream_paused(True)
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.current
        if ex is not None:
            ex.on_downstream_paused(False)
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # ---- the stream: how the current exchange answers (contracts.Downstream) ----------------------

    def send_continue(self) -> None:
        self.transport.write(CONTINUE_100)

    def send_head(self, status: int, headers: list[tuple[str, str]], body: int, keep_alive: bool) -> bool:
        """Frame the response: chunked for a body of unknown length to an HTTP/1.1 client, else
        close-delimited (an HTTP/1.0 client); returns whether the connection stays open after it.
        The head is held back (one write, one segment, for head and body: ``flush``)."""
        self.chunk_out = False
        if body == CHUNKED or body == UNTIL_EOF:
            ex = self.current
            if ex is not None and ex.head.version == "1.1":
                headers.append(("transfer-encoding", "chunked"))
                self.chunk_out = True
            else:
                keep_alive = False
        if not keep_alive and status != 101:  # a 101 keeps Connection/Upgrade: they are the point of it
            headers.append(("connection", "close"))
        self.out = serialize_response_head(status, headers)
        return keep_alive

    def send_raw_head(self, raw: bytes, keep_alive: bool) -> None:
        """A response head as the upstream sent it, hop-by-hop headers already cut (HTTP/1 both sides)."""
        self.chunk_out = False
        self.out = raw if keep_alive else raw[:-2] + _CLOSE_LINE

    def send_data(self, data: bytes) -> None:
        if self.chunk_out:
            data = chunk(data)
        out = self.out
        if out is not None:
            self.out = None
            data = out + data
        self._write(data)

    def send_end(self) -> None:
        out = self.out
        if self.chunk_out:
            self.chunk_out = False
            out = LAST_CHUNK if out is None else out + LAST_CHUNK
        if out is not None:
            self.out = None
            self._write(out)

    def flush(self) -> None:
        """A held-back head whose body has not arrived yet goes out now (end of an upstream read)."""
        out = self.out
        if out is not None:
            self.out = None
            self._write(out)

    def send_local(
        self,
        status: int,
        body: str | bytes,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        head_only: bool,
    ) -> int:
        """A whole response the proxy makes (no body for a HEAD request); returns the body's length."""
        data = local_reply(status, body, headers, close=not keep_alive)
        blen = len(body.encode()) if isinstance(body, str) else len(body)
        if head_only and blen:
            data = data[:-blen]
        self.transport.write(data)
        return blen

    def connection_info(self, name: str) -> Any:
        transport = self.transport
        return transport.get_extra_info(name) if transport is not None else None

    # ---- used by Exchange -----------------------------------------------------------------------

    def pause(self, reason: str) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        if ex is not self.current:
            return
        self.current = None
        if self.tunnel is not None:
            return
        failed = self.failed
        if failed is not None and keep_alive and not self.ctx.live.draining and self.upgrade_buf is None:
            self._after_failure(failed)  # reading ended in an error (closed already): the next turn
            return
        if not keep_alive or self.closed or self.ctx.live.draining or self.upgrade_buf is not None:
            lingers = not self.closed and not ex.req_done  # a failed read has closed: it never lingers
            self.closed = True
            if lingers:
                self._linger()
            else:
                self.transport.close()
            return
        if self.queue:
            nxt = self.current = self.queue.popleft()
            self.resume("pipeline")
            nxt.begin()
        else:
            self.idle_since = self.ctx.live.clock

    def _linger(self) -> None:
        """Close a connection whose request body is still coming, as Envoy's delayed close does: a
        close with unread bytes would reset it, and a client still sending could lose the response
        to the reset. The response is followed by a FIN; what the client still sends is read and
        dropped (``closed``) until it closes too, or ``LINGER`` seconds."""
        t = self.transport
        if not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        if self.paused:
            self.paused.clear()
            t.resume_reading()
        self.linger = self.ctx.loop.call_later(LINGER, t.close)

    def abort(self) -> None:
        """The response cannot be completed (upstream died mid-body, timeout after headers)."""
        self.closed = True
        self.transport.abort()

    def start_tunnel(self, conn: Any, rest: bytes) -> None:
        """The upstream said 101: from now on bytes pass through untouched both ways."""
        up = conn.transport
        conn.exchange = None
        conn.tunnel = self.transport
        conn.pool.discard(conn)  # a tunnel is not a pooled connection any more
        self.tunnel = up
        buf = self.upgrade_buf or []
        self.upgrade_buf = None
        for b in buf:
            up.write(b)
        if rest:
            self.transport.write(rest)

    # ---- errors and timeouts --------------------------------------------------------------------

    def _protocol_error(self, exc: ProtocolError) -> None:
        """The session cannot parse past ``exc``: nothing more is read. As Envoy (measured, 1.40), the
        requests parsed before it are answered in order, then the one that failed gets 400/431 and a
        close, logged and counted with DPE and Envoy's details; an error in the body of a request whose
        response has gone already resets the connection instead of answering twice."""
        log.debug("bad request from %s: %s", self.peer_ip, exc)
        self.closed = True
        p = self.parsing
        if p is not None and p.done and not p.req_done:
            self.transport.abort()
            return
        self.failed = exc
        if self.current is None:
            self._after_failure(exc)
            return
        self.transport.pause_reading()
        if self.current is p and not p.req_done:
            # It is the one being answered that failed, in its body or trailers: it never ends.
            _refuse(p, exc)

    def _after_failure(self, exc: ProtocolError) -> None:
        """The next turn after reading failed: a request parsed before the error, else the error's own
        answer (once; its exchange closes the connection)."""
        if self.queue:
            nxt = self.current = self.queue.popleft()
            nxt.begin()
            if nxt is self.parsing and not nxt.req_done:
                _refuse(nxt, exc)  # its body failed: answered as soon as its turn has begun
            return
        p = self.parsing
        if p is not None and not p.req_done:
            self.transport.close()  # the error was in its body, and it was answered (_refuse)
            return
        # The error is in a head: no exchange has it, so one is made for its answer to be logged and
        # counted as every local reply is (Envoy logs it without method, path or authority).
        ex = Exchange(self, _unparsed_head(), self.ctx, self.peer_ip, self.peer_ip_bytes)
        ex.dn = self
        ex.t0 = time.monotonic()
        ex.start = time.time()
        self.current = ex
        _refuse(ex, exc)

    def check_timeouts(self, now: float, header_timeout: float, idle_timeout: float) -> None:
        if self.closed or self.tunnel is not None or self.current is not None:
            return
        if self.session.in_head:
            if now - self.head_since > header_timeout:
                self.closed = True
                self.transport.write(local_reply(408, "request timeout\n", close=True))
                self.transport.close()
        elif now - self.idle_since > idle_timeout:
            self.closed = True
            self.transport.close()

    def shutdown(self) -> None:
        """Drain: an idle connection closes now; a busy one closes after its current response."""
        if self.current is None and self.tunnel is None and not self.closed:
            self.closed = True
            self.transport.close()
