"""The exchange's I/O glue around the attempts machine, without sockets or a running loop.

Real listener, exchange and upstream connection objects over in-memory transports; a fake loop whose
clock the test moves (timers, the listener's deadline sweep) and a fake pool that hands each attempt a
fresh connection, or refuses it, when the test says so. What the tests watch is what a client and an
upstream would see: bytes written, connections closed or reset, and the access log's flags.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from meshbus.proxy.adapters.listener import DownstreamConnection, ListenerContext, LiveState
from meshbus.proxy.adapters.upstream import PENDING, ClusterPool, UpstreamConnection
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.filters.observe import Observability
from meshbus.telemetry.accesslog import AccessLogRecord
from meshbus.telemetry.metrics import InternalMetrics, IstioMetrics, Registry
from tests.unit.proxy.conftest import SERVICES, build

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

ROUTE = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 2, retryOn: "%(retry_on)s"%(per_try)s}%(timeout)s
"""

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown"


class Handle:
    def __init__(self, when: float, cb: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when, self.cb, self.args, self.cancelled = when, cb, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_later / call_at / time on a clock the test moves; timers run when it passes them."""

    def __init__(self) -> None:
        self.clock = 1000.0
        self.timers: list[tuple[float, int, Handle]] = []
        self.seq = itertools.count()

    def time(self) -> float:
        return self.clock

    def call_at(self, when: float, cb: Callable[..., Any], *args: Any) -> Handle:
        h = Handle(when, cb, args)
        heapq.heappush(self.timers, (when, next(self.seq), h))
        return h

    def call_later(self, delay: float, cb: Callable[..., Any], *args: Any) -> Handle:
        return self.call_at(self.clock + delay, cb, *args)

    def advance(self, dt: float) -> None:
        end = self.clock + dt
        while self.timers and self.timers[0][0] <= end:
            when, _, h = heapq.heappop(self.timers)
            self.clock = max(self.clock, when)
            if not h.cancelled:
                h.cb(*h.args)
        self.clock = end

    def pending(self) -> list[Handle]:
        return [h for _, _, h in self.timers if not h.cancelled]


class MemTransport:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.1.1.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True


class FakePool:
    """Every attempt waits (PENDING) until the test answers it: ``connect()`` or ``refuse()``."""

    def __init__(self, home: ClusterPool) -> None:
        self.home = home  # the real pool each connection belongs to (it only drops closed ones)
        self.waiting: list[tuple[Endpoint, Any]] = []
        self.released: list[tuple[UpstreamConnection, bool]] = []
        self.idle: list[UpstreamConnection] = []

    def acquire(self, cluster: Cluster, endpoint: Endpoint, waiter: Any) -> UpstreamConnection | int:
        if self.idle:
            return self.idle.pop()
        self.waiting.append((endpoint, waiter))
        return PENDING

    def cancel_wait(self, waiter: Any) -> None:
        self.waiting = [(e, w) for e, w in self.waiting if w is not waiter]

    def release(self, conn: UpstreamConnection, reusable: bool, cluster: Cluster, now: float) -> None:
        conn.exchange = None
        self.released.append((conn, reusable))

    def connect(self) -> tuple[UpstreamConnection, MemTransport, str]:
        """Answer the oldest waiting attempt with a new connection: (conn, its transport, its endpoint)."""
        ep, waiter = self.waiting.pop(0)
        conn = UpstreamConnection(self.home, ep.key)
        transport = MemTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        waiter.on_pool_conn(conn, None)
        return conn, transport, ep.address

    def refuse(self) -> None:
        _ep, waiter = self.waiting.pop(0)
        waiter.on_pool_conn(None, "connect-failure")


class Proxy:
    """A listener context over a fake server: one runtime, one fake pool, an access log list."""

    def __init__(
        self,
        *,
        retry_on: str = "5xx",
        per_try: str = "",
        timeout: str = "",
        max_retries: int = 1000,
    ) -> None:
        route = ROUTE % {
            "retry_on": retry_on,
            "per_try": f", perTryTimeout: {per_try}" if per_try else "",
            "timeout": f"\n    timeout: {timeout}" if timeout else "",
        }
        self.loop = FakeLoop()
        runtime = build(SERVICES + route, rng=lambda: 0.5)
        self.cluster = runtime.clusters["outbound|9080||reviews.default.svc.cluster.local"]
        # The DestinationRule's connectionPool.http.maxRetries (tests/integration/proxy/test_traffic.py
        # shows that path); here the built breaker's limit is set directly.
        self.cluster.breaker.max_retries = max_retries
        self.pool = FakePool(ClusterPool(self.cluster.name, self.loop))  # type: ignore[arg-type]
        self.log: list[AccessLogRecord] = []
        pools = SimpleNamespace(get=lambda name: self.pool)
        registry = Registry()
        observe = Observability(IstioMetrics(registry), InternalMetrics(registry), "default", {})
        # the request path reads the access log from observe (ProxyServer.access_log sets it there)
        observe.access_log = SimpleNamespace(log=self.log.append)  # type: ignore[assignment]
        self.server = SimpleNamespace(
            live=LiveState(runtime),  # runtime, draining, clock
            pools=pools,
            access_log=observe.access_log,
            logging_on=True,
            mesh_tls=None,
            observe=observe,
            loop=self.loop,
            config=SimpleNamespace(max_header_bytes=65536),
            connections=set(),
        )
        self.ctx = ListenerContext(self.server, "outbound")  # type: ignore[arg-type]
        self.ctx.now = self.loop.time

    def client(self, request: bytes) -> tuple[DownstreamConnection, MemTransport]:
        dc = DownstreamConnection(self.ctx)
        t = MemTransport()
        dc.connection_made(t)  # type: ignore[arg-type]
        dc.data_received(request)
        return dc, t

    def idle(self) -> bool:
        b = self.cluster.breaker
        return (
            b.active_requests == 0
            and b.active_retries == 0
            and not any(e.active_requests for e in self.cluster.endpoints)
        )


GET = b"GET /r HTTP/1.1\r\nhost: reviews:9080\r\n\r\n"


def test_a_503_is_replayed_with_its_body_on_a_new_connection_after_the_backoff() -> None:
    p = Proxy(retry_on="5xx")
    _dc, client = p.client(b"POST /r HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: 7\r\n\r\npayload")
    first, up1, _ = p.pool.connect()
    assert up1.data.endswith(b"\r\n\r\npayload")
    first.data_received(UNAVAILABLE)
    assert up1.closed and client.data == b""  # the 503 is not the client's: the connection is dropped
    assert p.pool.waiting == [] and len(p.loop.pending()) == 1  # the backoff timer
    p.loop.advance(0.0125)  # 25 ms * rng 0.5
    second, up2, _ = p.pool.connect()
    assert up2.data == up1.data
    second.data_received(OK)
    assert client.data.startswith(b"HTTP/1.1 200 OK") and client.data.endswith(b"ok")
    assert p.log[-1].response_flags == "-" and p.cluster.breaker.retries == 1 and p.idle()


def test_a_per_try_timeout_fires_from_the_deadline_sweep_and_the_retry_answers() -> None:
    p = Proxy(retry_on="5xx", per_try="0.2s")
    _dc, client = p.client(GET)
    _hung, up1, _ = p.pool.connect()
    p.loop.advance(0.19)
    assert not up1.closed
    p.loop.advance(0.03)  # past 0.2 s and the sweep's 10 ms resolution
    assert up1.closed
    p.loop.advance(0.0125)
    second, _, _ = p.pool.connect()
    second.data_received(OK)
    assert client.data.startswith(b"HTTP/1.1 200 OK") and p.idle()
    assert not p.ctx.deadlines.waiting


def test_connect_failures_until_retries_run_out_answer_503_uf_urx() -> None:
    p = Proxy(retry_on="connect-failure")
    _dc, client = p.client(GET)
    for _ in range(2):
        p.pool.refuse()
        p.loop.advance(1.0)
    p.pool.refuse()
    assert client.data.startswith(b"HTTP/1.1 503")
    assert b"x-meshbus-flags: UF,URX" in client.data and p.log[-1].response_flags == "UF,URX"
    assert p.cluster.breaker.retry_limit_exceeded == 1 and p.idle()


def test_a_retry_over_the_clusters_budget_gives_the_client_the_503_flagged_uo() -> None:
    p = Proxy(retry_on="5xx", max_retries=1)
    _a, client_a = p.client(GET)
    _b, client_b = p.client(GET)
    conn_a, _up_a, _ = p.pool.connect()
    conn_b, _, _ = p.pool.connect()
    conn_a.data_received(UNAVAILABLE)  # retried: takes the one slot
    conn_b.data_received(UNAVAILABLE)  # over the budget: this 503 is the answer
    assert client_b.data.startswith(b"HTTP/1.1 503") and client_b.data.endswith(b"down")
    assert p.log[-1].response_flags == "UO"
    assert p.cluster.breaker.retry_overflow == 1 and p.cluster.breaker.active_retries == 1
    p.loop.advance(0.0125)
    retried, _, _ = p.pool.connect()
    retried.data_received(OK)
    assert client_a.data.startswith(b"HTTP/1.1 200") and p.idle()


def test_a_reset_after_the_first_response_byte_resets_the_client() -> None:
    p = Proxy(retry_on="5xx,reset")
    _dc, client = p.client(GET)
    conn, _, _ = p.pool.connect()
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
    conn.connection_lost(None)
    assert client.aborted and client.data.startswith(b"HTTP/1.1 200 OK")
    assert p.pool.waiting == [] and p.log[-1].response_flags == "UC" and p.idle()


def test_a_stale_pooled_connection_is_replayed_once_on_a_fresh_one() -> None:
    p = Proxy(retry_on="connect-failure")
    _dc, _client = p.client(GET)
    used, _, _ = p.pool.connect()
    used.data_received(OK)
    assert p.pool.released == [(used, True)]
    p.pool.idle.append(used)  # the next request reuses it...
    _dc2, client2 = p.client(GET)
    used.connection_lost(None)  # ...and the upstream had closed it while idle
    assert p.pool.waiting and not p.loop.pending()  # at once, no backoff
    fresh, _, _ = p.pool.connect()
    fresh.data_received(OK)
    assert client2.data.startswith(b"HTTP/1.1 200") and p.cluster.breaker.retries == 0 and p.idle()


def test_client_gone_during_the_backoff_cancels_the_timer_and_frees_the_retry_slot() -> None:
    p = Proxy(retry_on="5xx", max_retries=1)
    dc, _client = p.client(GET)
    conn, _, _ = p.pool.connect()
    conn.data_received(UNAVAILABLE)
    assert p.cluster.breaker.active_retries == 1 and len(p.loop.pending()) == 1
    dc.connection_lost(None)
    assert p.loop.pending() == [] and p.idle()
    assert p.log[-1].response_flags == "DC"


def test_client_gone_while_waiting_for_a_connection_leaves_the_queue() -> None:
    p = Proxy(timeout="1s")
    dc, _client = p.client(GET)
    assert len(p.pool.waiting) == 1
    dc.connection_lost(None)
    assert p.pool.waiting == [] and p.idle() and not p.ctx.deadlines.waiting


class FrameStream:
    """A client stream that is not HTTP/1 (as an HTTP/2 stream would be): it records the stream calls
    the exchange makes, as frames, and has no transport the exchange could write bytes to."""

    peer_ip = "10.0.0.9"
    peer_ip_bytes = b"10.0.0.9"
    peer_principal = None
    write_paused = False

    def __init__(self) -> None:
        self.frames: list[tuple[Any, ...]] = []
        self.done: bool | None = None

    def send_continue(self) -> None:
        self.frames.append(("CONTINUE",))

    def send_head(self, status: int, headers: list[tuple[str, str]], body: int, keep_alive: bool) -> bool:
        self.frames.append(("HEADERS", status, dict(headers)))
        return keep_alive

    def send_raw_head(self, raw: bytes, keep_alive: bool) -> None:
        raise AssertionError("an HTTP/1 pass-through head sent to a non-HTTP/1 stream")

    def send_data(self, data: bytes) -> None:
        self.frames.append(("DATA", data))

    def send_end(self) -> None:
        self.frames.append(("END",))

    def flush(self) -> None:
        pass

    def send_local(
        self,
        status: int,
        body: str | bytes,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        head_only: bool,
    ) -> int:
        self.frames.append(("LOCAL", status, dict(headers), body))
        return len(body)

    def pause(self, reason: str) -> None:
        pass

    def resume(self, reason: str) -> None:
        pass

    def exchange_done(self, ex: Any, keep_alive: bool) -> None:
        self.done = keep_alive

    def abort(self) -> None:
        self.frames.append(("RESET",))

    def start_tunnel(self, conn: Any, rest: bytes) -> None:
        raise AssertionError("no Upgrade on this stream")


def _h2_request(path: str) -> Any:
    from meshbus.proxy.adapters.exchange import Exchange
    from meshbus.proxy.codec.http1 import RequestHead

    headers = [("host", "reviews:9080"), ("user-agent", "h2-client")]
    head = RequestHead("GET", path, "2", list(headers), dict(headers), True, False, 0, 0)
    return head, Exchange


def test_another_codec_plugs_in_through_the_stream_calls_only() -> None:
    """The exchange frames nothing itself: a chunked upstream body reaches a non-HTTP/1 stream as
    plain DATA with no transfer-encoding, and a local reply as one call."""
    p = Proxy()
    stream = FrameStream()
    head, exchange = _h2_request("/r")
    ex = exchange(stream, head, p.ctx)  # type: ignore[arg-type]
    ex.begin()
    conn, up, _ = p.pool.connect()
    assert up.data.startswith(b"GET /r HTTP/1.1\r\nhost: reviews:9080\r\n")  # upstream stays HTTP/1
    conn.data_received(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-app: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    kinds = [f[0] for f in stream.frames]
    assert kinds == ["HEADERS", "DATA", "END"], stream.frames
    _, status, headers = stream.frames[0]
    assert status == 200 and headers["x-app"] == "1" and "transfer-encoding" not in headers
    assert stream.frames[1] == ("DATA", b"ok") and stream.done is True and p.idle()

    missing = FrameStream()
    head, exchange = _h2_request("/r")
    head.headers[0] = ("host", "nowhere")
    head.hdict["host"] = "nowhere"
    exchange(missing, head, p.ctx).begin()  # type: ignore[arg-type]
    assert [f[:2] for f in missing.frames] == [("LOCAL", 404)]
    assert missing.frames[0][2]["x-meshbus-flags"] == "NR" and p.log[-1].response_flags == "NR"


def test_remove_only_header_ops_cut_lines_from_a_head_that_goes_up_as_received() -> None:
    from meshbus.proxy.adapters.exchange import _raw_removed
    from meshbus.proxy.filters.headerops import HeaderOps

    raw = b"GET /r HTTP/1.1\r\nHost: reviews\r\nAuthorization: Bearer t\r\nAuthorization-Hint: keep\r\nX-A: 1"
    hdict = {"host": "reviews", "authorization": "Bearer t", "authorization-hint": "keep", "x-a": "1"}
    cut = _raw_removed(raw, HeaderOps(remove=frozenset({"authorization", "x-absent"})), hdict)
    assert cut == b"GET /r HTTP/1.1\r\nHost: reviews\r\nAuthorization-Hint: keep\r\nX-A: 1"
    assert _raw_removed(raw, HeaderOps(set=(("x-b", "2"),)), hdict) is None  # sets: the head is rebuilt
    # any spelling of the name: lowercase, Title-Case (plain searches), another (the case-blind regex)
    for spelled in ("authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"):
        raw = f"GET /r HTTP/1.1\r\nX-Auth: 1\r\n{spelled}: Bearer t\r\nHost: reviews".encode()
        cut = _raw_removed(raw, HeaderOps(remove=frozenset({"authorization"})), hdict)
        assert cut == b"GET /r HTTP/1.1\r\nX-Auth: 1\r\nHost: reviews", spelled
        last = f"GET /r HTTP/1.1\r\nHost: reviews\r\n{spelled}: Bearer t".encode()  # the last line
        assert (
            _raw_removed(last, HeaderOps(remove=frozenset({"authorization"})), hdict)
            == b"GET /r HTTP/1.1\r\nHost: reviews"
        )


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_removed_line_ends_where_its_parsed_value_does(where: str) -> None:
    """The cut steps over the parsed value (a long token) instead of searching it for the line's end;
    the head and its values come from the real parser, and a value that does not fit the line (a
    joined duplicate) is searched for as before."""
    from meshbus.proxy.adapters.exchange import _raw_removed
    from meshbus.proxy.codec.http1 import HEAD, RequestSession
    from meshbus.proxy.filters.headerops import HeaderOps

    token = "eyJ" + "a.b-c_d" * 90
    lines = [b"Host: reviews", b"X-Tenant: t1", b"Accept: */*"]
    at = {"first": 0, "middle": 1, "last": 3}[where]
    lines.insert(at, b"Authorization: Bearer " + token.encode())
    data = b"GET /r HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    kind, head = RequestSession().feed(data)[0]
    assert kind == HEAD and head.raw is not None
    kept = [line for line in lines if not line.startswith(b"Authorization")]
    ops = HeaderOps(remove=frozenset({"authorization"}))
    assert _raw_removed(head.raw, ops, head.hdict) == b"GET /r HTTP/1.1\r\n" + b"\r\n".join(kept) + b"\r\n"
    # a value longer or shorter than its line (not what the parser gave): the line's end is searched
    for value in ("Bearer " + token + ",x", "Bearer"):
        hdict = {**head.hdict, "authorization": value}
        assert _raw_removed(head.raw, ops, hdict) == b"GET /r HTTP/1.1\r\n" + b"\r\n".join(kept) + b"\r\n"


class CountingTransport(MemTransport):
    """Counts the calls that cost a system call each on a real socket (a write; pausing or resuming
    reading changes the epoll set)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"write": 0, "pause_reading": 0, "resume_reading": 0}

    def write(self, data: bytes) -> None:
        self.calls["write"] += 1
        super().write(data)

    def pause_reading(self) -> None:
        self.calls["pause_reading"] += 1

    def resume_reading(self) -> None:
        self.calls["resume_reading"] += 1


def test_keep_alive_requests_cost_one_write_each_way_and_never_pause_reading() -> None:
    """strace on the bench proxies shows 2 reads, 2 writes and no epoll_ctl per proxied request; this
    pins the proxy's share of that: per request one write up, one down, no pause/resume of reading
    and no timer of its own."""
    p = Proxy()
    dc = DownstreamConnection(p.ctx)
    down = CountingTransport()
    dc.connection_made(down)  # type: ignore[arg-type]
    up = CountingTransport()
    conn: UpstreamConnection | None = None
    timers = []
    for i in range(1, 4):
        if conn is not None:
            p.pool.idle.append(conn)  # the pooled connection, reused
        dc.data_received(GET)
        if conn is None:
            ep, waiter = p.pool.waiting.pop(0)
            conn = UpstreamConnection(p.pool.home, ep.key)
            conn.connection_made(up)  # type: ignore[arg-type]
            waiter.on_pool_conn(conn, None)
        assert up.calls["write"] == i and up.data.count(b"GET /r HTTP/1.1") == i
        conn.data_received(OK)
        assert down.calls["write"] == i and down.data.endswith(b"\r\n\r\nok")  # head and body: one write
        timers.append(len(p.loop.pending()))
    assert p.pool.released == [(conn, True)] * 3
    for t in (down, up):
        assert t.calls["pause_reading"] == t.calls["resume_reading"] == 0
    assert timers[0] == timers[-1] <= 1  # at most the listener's one deadline sweep, not one per request


def test_a_swapped_runtime_routes_the_next_request_through_the_listeners_typed_fields() -> None:
    """The listener context holds the runtime's route table and clusters in typed fields (read
    natively per request, not by name); a runtime the server swaps in rebinds them at the next request."""
    p = Proxy()
    first = p.server.live.runtime
    _dc, client = p.client(GET)
    assert p.ctx.runtime is first and p.ctx.routes is first.outbound and p.ctx.clusters is first.clusters
    conn, _up, _ = p.pool.connect()
    conn.data_received(OK)
    assert client.data.startswith(b"HTTP/1.1 200 OK")

    p.server.live.runtime = build(SERVICES.split("---")[1], rng=lambda: 0.5)  # ratings only: reviews is gone
    _dc, client = p.client(GET)
    assert p.ctx.runtime is p.server.live.runtime and p.ctx.routes is p.server.live.runtime.outbound
    assert client.data.startswith(b"HTTP/1.1 404") and p.log[-1].response_flags == "NR"


def test_the_exchange_takes_the_peer_address_the_listener_hands_over() -> None:
    """X-Forwarded-For comes from the address the listener passes (a native read there), and a caller
    that passes none (another codec's stream) still has its own read."""
    p = Proxy()
    _dc, _client = p.client(GET)
    _conn, up, _ = p.pool.connect()
    assert b"x-forwarded-for: 10.1.1.1\r\n" in up.data  # MemTransport's peername
    head, exchange = _h2_request("/r")
    ex = exchange(FrameStream(), head, p.ctx, "10.1.2.3", b"10.1.2.3")
    ex.begin()
    _conn, up, _ = p.pool.connect()
    assert b"x-forwarded-for: 10.1.2.3\r\n" in up.data
    ex = exchange(FrameStream(), *_h2_request("/r")[:1], p.ctx)  # type: ignore[arg-type]
    assert ex.peer_ip == "10.0.0.9" and ex.peer_ip_bytes == b"10.0.0.9"
