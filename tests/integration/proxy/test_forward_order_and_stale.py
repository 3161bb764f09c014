"""Header-op order (destination's, then the route's: the route wins) and the once-only retry of a request
that fails on a reused upstream connection before any reply byte (idempotent methods only)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from meshbus.proxy.codec.http1 import END, HEAD, ProtocolError, RequestSession, serialize_response_head
from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Client, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_route_header_ops_win_over_destination_ops(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - headers:
              request: {set: {x-who: route}}
              response: {set: {x-resp-who: route}}
            route:
            - destination: {host: reviews}
              headers:
                request: {set: {x-who: destination, x-dest-only: d}}
                response: {set: {x-resp-who: destination}, add: {x-resp-dest: d}}
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    r = await fetch(p.port, "/")
    assert r.status == 200
    seen = u.seen[-1].headers
    # Envoy applies the destination's ops first and the route's last, so the route's value stands.
    assert seen["x-who"] == "route"
    assert seen["x-dest-only"] == "d"
    assert r.headers["x-resp-who"] == "route"
    assert r.headers["x-resp-dest"] == "d"


@dataclass
class StaleUpstream:
    """Answers the first request of each connection (keep-alive) and closes the connection when a second
    request arrives on it, without answering: an idle keep-alive connection the server dropped just as
    the proxy reused it."""

    version: str = "v1"
    port: int = 0
    connections: int = 0
    seen: list[tuple[int, str, str]] = field(default_factory=list)  # (connection no., method, path)
    _server: Any = None
    _transports: set[Any] = field(default_factory=set)

    async def start(self) -> StaleUpstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _StaleProtocol(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()
        for t in list(self._transports):
            t.abort()
        await self._server.wait_closed()


class _StaleProtocol(asyncio.Protocol):
    def __init__(self, up: StaleUpstream) -> None:
        self.up = up
        self.session = RequestSession()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.number = 0
        self.requests = 0
        self.head: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.up.connections += 1
        self.number = self.up.connections
        self.up._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.up._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.session.feed(data)
        except ProtocolError:
            self.transport.close()
            return
        for kind, payload in events:
            if kind == HEAD:
                self.head = payload
            elif kind == END:
                self.requests += 1
                self.up.seen.append((self.number, self.head.method, self.head.target))
                if self.requests > 1:
                    self.transport.close()  # "idle timeout": gone without a reply byte
                    return
                body = b"ok"
                self.transport.write(serialize_response_head(200, [("content-length", "2")]) + body)


@pytest.fixture
async def stale_upstream() -> Any:
    u = await StaleUpstream().start()
    yield u
    await u.stop()


NO_POLICY_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 0}
"""


async def test_get_failing_on_a_reused_connection_is_sent_again_once(
    stale_upstream: StaleUpstream, proxy: ProxyFactory
) -> None:
    u = stale_upstream
    # attempts 0: any second try seen below is the stale-connection retry, not the route's policy
    p = await proxy(service_entry("reviews", [u]) + NO_POLICY_RETRIES)  # type: ignore[list-item]
    c = await Client.connect(p.port)
    try:
        assert (await c.request(path="/first")).status == 200
        r = await c.request(path="/second")
    finally:
        await c.close()
    assert r.status == 200 and r.body == b"ok"
    assert r.flags is None
    # sent on the pooled connection (dropped there), then once more on a fresh one
    assert u.seen == [(1, "GET", "/first"), (1, "GET", "/second"), (2, "GET", "/second")]


async def test_post_failing_on_a_reused_connection_is_not_replayed(
    stale_upstream: StaleUpstream, proxy: ProxyFactory
) -> None:
    u = stale_upstream
    p = await proxy(service_entry("reviews", [u]) + NO_POLICY_RETRIES)  # type: ignore[list-item]
    c = await Client.connect(p.port)
    try:
        assert (await c.request(path="/first")).status == 200
        r = await c.request(method="POST", path="/order", body=b"pay once")
    finally:
        with contextlib.suppress(ConnectionError):
            await c.close()
    assert r.status == 503 and r.flags == "UC"
    assert u.seen == [(1, "GET", "/first"), (1, "POST", "/order")]
    assert u.connections == 1  # no fresh connection was opened to replay it
