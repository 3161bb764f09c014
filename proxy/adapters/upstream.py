"""Upstream keep-alive connection pools (the largest single win in the bench anchors: 4x).

One ``ClusterPool`` per cluster name, holding idle connections per endpoint (LIFO, so the warmest
socket is reused), the number of open-or-opening connections, and a bounded FIFO of requests waiting
for a connection. Limits come from the cluster's ``PoolSettings`` each time, so a config swap that
changes them applies at once while the sockets themselves survive the swap (pools are keyed by
cluster name and endpoint address, not by runtime object).

Circuit breaking, as Envoy does it for HTTP/1: a request that finds no idle connection opens one if
the cluster is under ``max_connections``; otherwise it waits in the pending queue if the cluster's
breaker admits it (``http1MaxPendingRequests``), else the caller answers 503 UO at once.

The receiver of a connection's events is its current ``exchange`` (an ``UpstreamReceiver``: see
adapters/contracts.py); a connection with no exchange is idle, and bytes arriving on an idle connection
close it. A request that waits for a connection is a ``PoolWaiter``: the waiter object itself is queued
(no callback object per request), and its ``on_pool_conn`` is called once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.adapters.write_batch import BatchedTransport, WriteBatch
from meshbus.proxy.codec.http1 import BODY, END, HEAD, LAST_CHUNK, ProtocolError, ResponseSession, chunk
from meshbus.proxy.tls.mtls import upstream_lost_kind

if TYPE_CHECKING:
    from meshbus.proxy.adapters.contracts import PoolWaiter, UpstreamReceiver
    from meshbus.proxy.adapters.exchange import Exchange
    from meshbus.proxy.adapters.listener import ListenerContext
    from meshbus.proxy.codec.http1 import ResponseHead
    from meshbus.proxy.core.cluster import Cluster
    from meshbus.proxy.core.endpoint import Endpoint

log = logging.getLogger(__name__)

MIRROR_TIMEOUT: Final = 5.0


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "batched",
        "closed",
        "exchange",
        "host",
        "idle_since",
        "key",
        "native",
        "pool",
        "requests",
        "session",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: ClusterPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.host = "%s:%d" % key  # noqa: UP031 - "address:port" for the access log, made once
        self.transport: asyncio.Transport | None = None
        # ``transport`` again when it holds writes for the loop's batch (the pool manager's): typed, so
        # the compiled build writes a request natively, not through ``write`` looked up by name.
        self.batched: BatchedTransport | None = None
        self.session = ResponseSession(raw_heads=True)  # heads pass through as bytes when unchanged
        self.exchange: UpstreamReceiver | None = None
        # ``exchange`` again when it is an Exchange (Exchange._send sets it): typed, so the compiled
        # build calls its methods natively; through the Protocol each call is a lookup by name that
        # missed CPython's type method cache. Used only while it ``is`` the current ``exchange``.
        self.native: Exchange | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.tunnel: Any = None  # downstream transport once upgraded (WebSocket): raw bytes both ways

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        mgr = self.pool.manager
        if mgr is None:
            self.transport = transport  # type: ignore[assignment]
        else:
            self.transport = self.batched = BatchedTransport(transport, mgr.batch)  # type: ignore[assignment]

    def send(
        self,
        exchange: UpstreamReceiver,
        head: bytes,
        body: list[bytes],
        chunked: bool,
        end: bool,
        head_request: bool,
    ) -> None:
        """Send a request: its encoded head, the body so far (framed here), the last chunk if ``end``."""
        self.exchange = exchange
        self.native = None
        self.requests += 1
        self.session.expect(head_request)
        data = head
        if body:
            data = data + (b"".join([chunk(b) for b in body]) if chunked else b"".join(body))
        if end and chunked:
            data += LAST_CHUNK
        batched = self.batched
        if batched is not None:
            batched.write(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def send_body(self, data: bytes, chunked: bool) -> None:
        self.transport.write(chunk(data) if chunked else data)  # type: ignore[union-attr]

    def send_last_chunk(self) -> None:
        self.transport.write(LAST_CHUNK)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        ex = self.exchange
        if ex is None:
            # Nobody asked: an idle connection must not talk. Do not reuse it.
            self.close()
            return
        try:
            events = self.session.feed(data)
        except ProtocolError:
            self.exchange = None
            self.close()
            ex.on_upstream_error(self, "protocol-error")
            return
        native = self.native
        nx = native if native is ex else None  # ``ex`` typed, when an Exchange: native calls below
        for kind, payload in events:
            if self.exchange is not ex:
                return  # the exchange let go of this connection (retry, timeout) mid-read
            if kind == BODY:
                if nx is not None:
                    nx.on_upstream_body(payload)
                else:
                    ex.on_upstream_body(payload)
            elif kind == HEAD:
                if nx is not None:
                    nx.on_upstream_head(payload)
                else:
                    ex.on_upstream_head(payload)
            elif kind == END:
                if nx is not None:
                    nx.on_upstream_end(self)
                else:
                    ex.on_upstream_end(self)
            else:
                ex.on_upstream_upgrade(self, payload)
                return
        # a head whose body has not arrived yet goes out now
        if nx is not None:
            nx.flush_out()
        else:
            ex.flush_out()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            # "reset", or why a TLS server refused us (its alert, or the close of a fresh TLS connection)
            ex.on_upstream_error(self, upstream_lost_kind(exc, self.requests, self.transport))

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_paused(False)

    def close(self) -> None:
        """Close and stop counting against the pool (its events no longer reach any exchange)."""
        self.exchange = None
        self.native = None
        self.pool.discard(self)
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


# acquire() outcomes besides a connection
PENDING: Final = 1  # the waiter's on_pool_conn is called later with (conn, None) or (None, error kind)
OVERFLOW: Final = 2  # circuit breaker: answer 503 UO


class ClusterPool:
    __slots__ = ("active", "count", "idle", "loop", "manager", "name", "waiters")

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.loop = loop
        self.manager: PoolManager | None = None  # its ``origin`` decides TLS per new connection
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self.active: set[UpstreamConnection] = set()  # open or opening, counted against max_connections
        self.count = 0
        self.waiters: deque[tuple[Any, Any, PoolWaiter]] = deque()

    def acquire(self, cluster: Cluster, endpoint: Endpoint, waiter: PoolWaiter) -> UpstreamConnection | int:
        """An idle connection now, or PENDING (``waiter`` gets the result later), or OVERFLOW.
        Typed: compiled, the endpoint's key is a native read (by name it missed the type cache)."""
        key = endpoint.key
        lst = self.idle.get(key)
        while lst:
            conn = lst.pop()
            if not conn.closed:
                return conn
        settings = cluster.pool
        if self.count < settings.max_connections:
            self._connect(cluster, endpoint, waiter)
            return PENDING
        breaker = cluster.breaker
        breaker.cx_overflow += 1  # Envoy's upstream_cx_overflow: the connection limit made it wait
        if breaker.try_enqueue_pending():
            self.waiters.append((cluster, endpoint, waiter))
            return PENDING
        return OVERFLOW

    def cancel_wait(self, waiter: PoolWaiter) -> None:
        for i, (cluster, _ep, w) in enumerate(self.waiters):
            if w is waiter:
                del self.waiters[i]
                cluster.breaker.dequeue_pending()
                return

    def _connect(self, cluster: Cluster, endpoint: Any, waiter: PoolWaiter) -> None:
        conn = UpstreamConnection(self, endpoint.key)
        self.active.add(conn)
        self.count += 1
        timeout = cluster.pool.connect_timeout
        origin = self.manager.origin if self.manager is not None else None
        opener = origin.opener(cluster, endpoint) if origin is not None else None  # TLS: proxy/tls/mtls.py
        self.loop.create_task(self._open(conn, endpoint.address, endpoint.port, timeout, waiter, opener))

    async def _open(
        self,
        conn: UpstreamConnection,
        host: str,
        port: int,
        timeout: float,
        waiter: PoolWaiter,
        opener: Any = None,
    ) -> None:
        err = None
        try:
            async with asyncio.timeout(timeout):
                if opener is None:
                    await self.loop.create_connection(lambda: conn, host, port)
                else:
                    err = await opener(conn, host, port)  # "tls:<reason>:<message>" when TLS failed
        except (OSError, TimeoutError) as exc:
            log.debug("connect to %s:%s failed: %r", host, port, exc)
            err = "connect-failure"
        if err is not None:
            conn.closed = True
            self.discard(conn)
            waiter.on_pool_conn(None, err)
            return
        if conn.closed:  # lost between connect and now
            waiter.on_pool_conn(None, "connect-failure")
            return
        waiter.on_pool_conn(conn, None)

    def release(self, conn: UpstreamConnection, reusable: bool, cluster: Cluster, now: float) -> None:
        """Give a connection back after a complete response."""
        # typed Cluster (compiled): ``cluster.pool`` is a native read, not two lookups by name, one of
        # which missed CPython's type method cache on every request (callgrind: ~190 instructions)
        conn.exchange = None
        conn.native = None  # an idle connection must not keep its last exchange (and its client) alive
        if conn.closed:
            return
        if not reusable:
            conn.close()
            return
        max_rpc = cluster.pool.max_requests_per_connection
        if max_rpc and conn.requests >= max_rpc:
            conn.close()
            return
        if self.waiters:
            wcluster, wep, waiter = self.waiters.popleft()
            wcluster.breaker.dequeue_pending()
            if wep.key == conn.key:
                waiter.on_pool_conn(conn, None)
                return
            # The waiter wants another endpoint: trade this socket for one to its endpoint.
            self._drop(conn)
            self._connect(wcluster, wep, waiter)
            return
        conn.idle_since = now
        lst = self.idle.get(conn.key)
        if lst is None:
            lst = self.idle[conn.key] = []
        lst.append(conn)

    def _drop(self, conn: UpstreamConnection) -> None:
        # Close without handing the freed slot to a waiter (the caller reuses the slot itself).
        self.active.discard(conn)
        self.count -= 1
        conn.exchange = None
        conn.closed = True
        if conn.transport is not None:
            conn.transport.close()

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self.active:
            self.active.discard(conn)
            self.count -= 1
            if self.waiters:
                wcluster, wep, waiter = self.waiters.popleft()
                wcluster.breaker.dequeue_pending()
                self._connect(wcluster, wep, waiter)

    def sweep(self, now: float, idle_timeout: float) -> None:
        for lst in self.idle.values():
            if lst and (now - lst[0].idle_since > idle_timeout or lst[0].closed):
                # one pass: a ``c not in keep`` per connection made it quadratic (~30 ms a second
                # for a pool of thousands of idle connections, half of them expiring)
                keep: list[UpstreamConnection] = []
                for c in lst:
                    if not c.closed and now - c.idle_since <= idle_timeout:
                        keep.append(c)
                    else:
                        c.close()
                lst[:] = keep

    def close_all(self) -> None:
        for conn in list(self.active):
            conn.close()
        self.idle.clear()


class PoolManager:
    """All upstream pools of one worker; survives config swaps."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pools: dict[str, ClusterPool] = {}
        self.batch = WriteBatch(loop)  # the worker's held upstream writes (write_batch.py)
        self.origin: Any = None  # proxy/mtls.TlsOrigin: TLS origination per new connection, None = plaintext

    def get(self, cluster_name: str) -> ClusterPool:
        pool = self.pools.get(cluster_name)
        if pool is None:
            pool = self.pools[cluster_name] = ClusterPool(cluster_name, self.loop)
            pool.manager = self
        return pool

    def sweep(self, now: float, clusters: Mapping[str, Cluster]) -> None:
        for name, pool in self.pools.items():
            cluster = clusters.get(name)
            idle_timeout = cluster.pool.idle_timeout if cluster is not None else 0.0
            pool.sweep(now, idle_timeout)

    def close_all(self) -> None:
        for pool in self.pools.values():
            pool.close_all()


class MirrorSend:
    """A shadow request: its response is read and dropped; it never touches the client."""

    __slots__ = ("body", "cluster", "conn", "ctx", "ep", "head", "keep", "timer")

    def __init__(self, ctx: ListenerContext, cluster: Any, head: bytes, body: bytes) -> None:
        self.ctx = ctx
        self.cluster = cluster
        self.head = head
        self.body = body
        self.conn: UpstreamConnection | None = None
        self.ep: Any = None
        self.timer: Any = None
        self.keep = False

    def begin(self) -> None:
        ep = self.cluster.pick(None, time.monotonic())
        if ep is None:
            return
        self.ep = ep
        r = self.ctx.pools.get(self.cluster.name).acquire(self.cluster, ep, self)
        if r is OVERFLOW:
            self.ctx.mirrors_dropped += 1
            return
        self.ctx.mirrors_in_flight += 1
        self.timer = self.ctx.loop.call_later(MIRROR_TIMEOUT, self._done, True)
        if r is not PENDING:
            self.on_pool_conn(r, None)  # type: ignore[arg-type]  # not PENDING nor OVERFLOW: a connection

    def on_pool_conn(self, conn: UpstreamConnection | None, error: str | None) -> None:
        if self.timer is None:  # timed out while waiting
            if conn is not None:
                self.ctx.pools.get(self.cluster.name).release(conn, True, self.cluster, 0.0)
            return
        if conn is None:
            self._done(False)
            return
        self.conn = conn
        conn.send(self, self.head + self.body, [], False, False, False)

    out = None  # nothing held back: a shadow's response goes nowhere

    def flush_out(self) -> None:
        pass

    def on_upstream_head(self, head: ResponseHead) -> None:
        self.keep = head.keep_alive

    def on_upstream_body(self, data: bytes) -> None:
        pass

    def on_upstream_end(self, conn: UpstreamConnection) -> None:
        self.conn = None
        self.ctx.pools.get(self.cluster.name).release(conn, self.keep, self.cluster, time.monotonic())
        self._done(False)

    def on_upstream_upgrade(self, conn: UpstreamConnection, rest: bytes) -> None:
        conn.close()
        self._done(False)

    def on_upstream_error(self, conn: UpstreamConnection, kind: str) -> None:
        self.conn = None
        self._done(False)

    def on_upstream_paused(self, paused: bool) -> None:
        pass

    def _done(self, timed_out: bool) -> None:
        if self.timer is None:
            return
        self.timer.cancel()
        self.timer = None
        self.ctx.mirrors_in_flight -= 1
        if timed_out and self.conn is not None:
            self.conn.close()
            self.conn = None
