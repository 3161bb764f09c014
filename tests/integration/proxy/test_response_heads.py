"""Response heads through the proxy, both ways they can go: passed through as received (nothing to
change but hop-by-hop headers) and rebuilt (header ops, hop-by-hop headers the fast path leaves alone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.integration.proxy.conftest import ProxyFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Client, HeadServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

BODY = b"hello"
HEADS = {
    # path -> head the upstream sends (keep-alive; the body is BODY)
    "/plain": b"HTTP/1.1 200 OK\r\nServer: raw\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
    "/hop": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nX-End: 1\r\nContent-Length: 5\r\n\r\n"
    ),
    "/old": b"HTTP/1.0 203 Non-Authoritative Information\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
}


@pytest.fixture
async def raw_upstream() -> AsyncIterator[HeadServer]:
    """Answers each request with the head HEADS[path] + BODY."""
    u = await HeadServer(lambda head: HEADS[head.split(b" ", 2)[1].decode()] + BODY).start()
    yield u
    await u.stop()


async def get_all(port: int, paths: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    c = await Client.connect(port)
    try:
        out = []
        for path in paths:
            r = await c.request(path=path)
            out.append((r.status, r.headers, r.body))
        return out
    finally:
        await c.close()


async def test_unchanged_heads_pass_through_without_hop_by_hop_headers(
    raw_upstream: HeadServer, proxy: ProxyFactory
) -> None:
    p = await proxy(service_entry("reviews", [raw_upstream]))  # type: ignore[list-item]
    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3), (s4, h4, _) = await get_all(
        p.port, ["/plain", "/hop", "/old", "/plain"]
    )
    assert (s1, b1, s2, b2, s3, b3, s4) == (200, BODY, 200, BODY, 203, BODY, 200)
    assert h1 == {"server": "raw", "content-length": "5"} == h4
    assert h2 == {"x-end": "1", "content-length": "5"}  # Connection, what it names, Keep-Alive, Proxy-*
    assert h3 == {"content-length": "5"}


async def test_response_header_ops_rebuild_the_head(raw_upstream: HeadServer, proxy: ProxyFactory) -> None:
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - headers:
              response: {set: {server: meshbus}, add: {x-resp: two}}
            route: [{destination: {host: reviews}}]
        """)
    p = await proxy(service_entry("reviews", [raw_upstream]) + vs)  # type: ignore[list-item]
    (s1, h1, b1), (s2, h2, _) = await get_all(p.port, ["/plain", "/hop"])
    assert (s1, b1) == (200, BODY) and h1 == {"server": "meshbus", "content-length": "5", "x-resp": "two"}
    assert s2 == 200 and h2 == {"x-end": "1", "content-length": "5", "server": "meshbus", "x-resp": "two"}


async def test_passed_through_head_says_close_when_the_client_asked_for_it(
    raw_upstream: HeadServer, proxy: ProxyFactory
) -> None:
    p = await proxy(service_entry("reviews", [raw_upstream]))  # type: ignore[list-item]
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /plain HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)  # the proxy closes after the response
    finally:
        writer.close()
        await writer.wait_closed()
    assert data == b"HTTP/1.1 200 OK\r\nServer: raw\r\nContent-Length: 5\r\nconnection: close\r\n\r\n" + BODY
