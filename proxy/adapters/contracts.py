"""The contracts between the proxy's I/O pieces, as Protocols that mypy checks.

Who calls whom on the request path: the listener makes an ``Exchange`` per request and hands it
its client connection (``Downstream``); the exchange takes an upstream connection from a ``Pool``
(now, or later through its ``PoolWaiter`` side), sends on it, and receives the response as the
connection's ``UpstreamReceiver``. Everything reaches the running server through ``Server``. The
implementations are adapters/listener.py, exchange.py, upstream.py and server.py; the exchange's
unit tests drive it with fakes of these shapes (tests/unit/proxy/test_attempts.py).

The upstream connection itself is the concrete ``upstream.UpstreamConnection``, not a Protocol: it is
a native class whose attributes the compiled exchange and pool read directly (a Protocol would make
each read a generic attribute lookup on every request), and a pool takes back only its own
connections. It needs no socket: tests give it an in-memory transport.

Read-only members are properties here so that an implementation may narrow their types.
"""

from __future__ import annotations

from collections.abc import MutableSet
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from meshbus.proxy.adapters.listener import LiveState
    from meshbus.proxy.adapters.upstream import UpstreamConnection
    from meshbus.proxy.build.runtime import ProxyRuntime
    from meshbus.proxy.codec.http1 import ResponseHead
    from meshbus.proxy.core.cluster import Cluster
    from meshbus.proxy.core.endpoint import Endpoint
    from meshbus.telemetry.accesslog import AccessLogRecord


class Transport(Protocol):
    """The part of an asyncio transport the exchange uses (asyncio.Transport, write_batch's)."""

    def write(self, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class UpstreamReceiver(Protocol):
    """What a connection reports to while it carries a request: an Exchange, or a mirror's sender.

    The connection calls ``flush_out`` at the end of each read: a response head the downstream
    stream held back for its first body bytes goes out then if no body came with it."""

    def flush_out(self) -> None: ...
    def on_upstream_head(self, head: ResponseHead) -> None: ...
    def on_upstream_body(self, data: bytes) -> None: ...
    def on_upstream_end(self, conn: UpstreamConnection) -> None: ...
    def on_upstream_upgrade(self, conn: UpstreamConnection, rest: bytes) -> None: ...
    def on_upstream_error(self, conn: UpstreamConnection, kind: str) -> None: ...
    def on_upstream_paused(self, paused: bool) -> None: ...


class PoolWaiter(Protocol):
    """Who waits for a connection: called once with (conn, None) or (None, error kind)."""

    def on_pool_conn(self, conn: UpstreamConnection | None, error: str | None) -> None: ...


class Pool(Protocol):
    """One cluster's keep-alive connections (upstream.ClusterPool)."""

    def acquire(self, cluster: Cluster, endpoint: Endpoint, waiter: PoolWaiter) -> UpstreamConnection | int:
        """An idle connection now, or PENDING (the waiter is called later), or OVERFLOW."""
        ...

    def cancel_wait(self, waiter: PoolWaiter) -> None: ...
    def release(self, conn: UpstreamConnection, reusable: bool, cluster: Cluster, now: float) -> None: ...


class Pools(Protocol):
    def get(self, cluster_name: str) -> Pool: ...


class AccessLogSink(Protocol):
    def log(self, record: AccessLogRecord) -> None: ...


class Downstream(Protocol):
    """The client stream an exchange answers on: the codec's side of one request.

    The exchange and the filter chain see a request as a ``RequestHead`` (method, target, version,
    headers; ``raw`` only from HTTP/1) and events (``begin``, ``on_request_body``, ``on_request_end``,
    ``on_downstream_paused``, ``on_downstream_lost``), and answer with the ``send_*`` calls below,
    which carry no wire format: the HTTP/1 connection (listener.DownstreamConnection) frames them as
    HTTP/1 (chunking, ``Connection: close``, a head held back for its first body bytes); an HTTP/2
    stream would frame them as HEADERS and DATA. ``send_raw_head`` is HTTP/1's pass-through of an
    HTTP/1 upstream's head; ``start_tunnel`` is HTTP/1's Upgrade.
    """

    def send_continue(self) -> None: ...
    def send_head(self, status: int, headers: list[tuple[str, str]], body: int, keep_alive: bool) -> bool:
        """Send a response head (``body``: the upstream's body framing, http1.LENGTH/CHUNKED/...);
        returns whether the connection stays open after the response."""
        ...

    def send_raw_head(self, raw: bytes, keep_alive: bool) -> None: ...
    def send_data(self, data: bytes) -> None: ...
    def send_end(self) -> None: ...
    def flush(self) -> None: ...
    def send_local(
        self,
        status: int,
        body: str | bytes,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        head_only: bool,
    ) -> int:
        """A whole response made by the proxy; returns its body length (for the access log; a
        HEAD request gets the head only)."""
        ...

    @property
    def peer_ip(self) -> str: ...
    @property
    def peer_ip_bytes(self) -> bytes: ...
    @property
    def peer_principal(self) -> str | None: ...
    def connection_info(self, name: str) -> Any:
        """A detail of the connection as asyncio names it (``sockname``: the local address;
        ``ssl_object``); None when there is none. For filters that match on them (authorization)."""
        ...

    @property
    def write_paused(self) -> bool: ...
    def pause(self, reason: str) -> None: ...
    def resume(self, reason: str) -> None: ...
    def exchange_done(self, ex: Any, keep_alive: bool) -> None: ...
    def abort(self) -> None: ...
    def start_tunnel(self, conn: UpstreamConnection, rest: bytes) -> None: ...


class Server(Protocol):
    """What listeners and exchanges use of the running server (adapters/server.ProxyServer)."""

    @property
    def live(self) -> LiveState: ...  # runtime, draining and clock as native fields (the request path)
    @property
    def runtime(self) -> ProxyRuntime: ...
    @property
    def pools(self) -> Pools: ...
    @property
    def access_log(self) -> AccessLogSink: ...
    @property
    def observe(self) -> Any: ...  # filters.observe.Observability: identity, metrics, spans
    @property
    def logging_on(self) -> bool: ...  # an access log is kept (else records are not even made)
    @property
    def mesh_tls(self) -> Any: ...  # tls.mtls.MeshTls once the proxy has a certificate, else None
    @property
    def registry(self) -> Any: ...  # telemetry.metrics.Registry (every metric family of this worker)
    @property
    def loop(self) -> Any: ...  # the asyncio loop: call_later / call_at / time
    @property
    def config(self) -> Any: ...  # bootstrap.BootstrapConfig
    @property
    def connections(self) -> MutableSet[Any]: ...  # open downstream connections
