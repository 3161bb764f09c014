"""Request heads as the upstream receives them, both ways they can go: passed through as received plus
the proxy's own lines (nothing else to change) and rebuilt (hop-by-hop headers, header ops, mirrors)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from tests.integration.proxy.conftest import ProxyFactory, service_entry, yaml
from tests.integration.proxy.upstreams import HeadServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def capture() -> AsyncIterator[HeadServer]:
    """Records each request head as bytes and answers 200 "ok"."""
    u = await HeadServer(lambda _head: OK).start()
    yield u
    await u.stop()


async def exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send each request (a separate write after the previous answer) and return the answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for req in requests:
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            out.append(head + await asyncio.wait_for(reader.readexactly(2), 5))
    finally:
        writer.close()
        await writer.wait_closed()
    return out


_TRACEPARENT = re.compile(rb"\r\ntraceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-0[01](?=\r\n)")


def untraced(head: bytes) -> bytes:
    """The head without the one traceparent line the proxy adds to a request that came without
    trace context (tests/integration/proxy/test_tracing.py is about that line)."""
    out, n = _TRACEPARENT.subn(b"", head)
    assert n == 1, head
    return out


def fields(head: bytes) -> list[tuple[str, str]]:
    lines = _TRACEPARENT.sub(b"", head).decode("latin-1").split("\r\n")[1:-2]
    return [(n, v) for n, _, v in (line.partition(": ") for line in lines)]


async def test_unchanged_head_passes_through_with_the_proxy_lines_appended(
    capture: HeadServer, proxy: ProxyFactory
) -> None:
    p = await proxy(service_entry("reviews", [capture]))  # type: ignore[list-item]
    answers = await exchange(
        p.port,
        b"GET /a?b=1 HTTP/1.1\r\nHost: reviews\r\nX-Mixed-Case: Keep Me\r\nX-Request-Id: given\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: reviews\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
    )
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"ok") for a in answers)
    first, second = (untraced(h) for h in capture.heads)
    assert first == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: reviews\r\nX-Mixed-Case: Keep Me\r\nX-Request-Id: given\r\n"
        b"x-forwarded-proto: http\r\nx-forwarded-for: 127.0.0.1\r\n\r\n"
    )
    # The Connection line is cut out; the proxy adds a request id when the client sent none.
    assert second.startswith(b"GET /b HTTP/1.1\r\nHost: reviews\r\nAccept: */*\r\nx-request-id: ")
    assert [n for n, _ in fields(second)] == [
        "Host", "Accept", "x-request-id", "x-forwarded-proto", "x-forwarded-for"
    ]  # fmt: skip
    assert len(dict(fields(second))["x-request-id"]) == 36


async def test_forwarded_lines_from_a_client_sidecar_are_replaced_in_a_passed_through_head(
    capture: HeadServer, proxy: ProxyFactory
) -> None:
    p = await proxy(service_entry("reviews", [capture]))  # type: ignore[list-item]
    await exchange(
        p.port,
        # what a server sidecar receives from a client sidecar
        b"GET /s HTTP/1.1\r\nHost: reviews\r\nX-Request-Id: r1\r\nX-Forwarded-Proto: https\r\n"
        b"x-forwarded-for: 10.1.2.3\r\nAccept: */*\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: reviews\r\nX-FORWARDED-PROTO: http\r\nX-Request-Id: r2\r\n\r\n",
        # a header whose name only starts like one of them is the client's own, kept
        b"GET /q HTTP/1.1\r\nHost: reviews\r\nX-Forwarded-Formula: 1\r\nX-Request-Id: r3\r\n\r\n",
    )
    s1, s2, s3 = (untraced(h) for h in capture.heads)
    assert s1 == (
        b"GET /s HTTP/1.1\r\nHost: reviews\r\nX-Request-Id: r1\r\nAccept: */*\r\n"
        b"x-forwarded-proto: http\r\nx-forwarded-for: 10.1.2.3, 127.0.0.1\r\n\r\n"
    )
    assert s2 == (
        b"GET /p HTTP/1.1\r\nHost: reviews\r\nX-Request-Id: r2\r\n"
        b"x-forwarded-proto: http\r\nx-forwarded-for: 127.0.0.1\r\n\r\n"
    )
    assert fields(s3) == [
        ("Host", "reviews"), ("X-Forwarded-Formula", "1"), ("X-Request-Id", "r3"),
        ("x-forwarded-proto", "http"), ("x-forwarded-for", "127.0.0.1"),
    ]  # fmt: skip


async def test_heads_with_something_to_change_are_rebuilt(capture: HeadServer, proxy: ProxyFactory) -> None:
    p = await proxy(service_entry("reviews", [capture]))  # type: ignore[list-item]
    await exchange(
        p.port,
        b"GET /1 HTTP/1.1\r\nHost: reviews\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: a\r\n\r\n",
        b"GET /2 HTTP/1.1\r\nHost: reviews\r\nConnection: keep-alive, X-Hop\r\nX-Hop: s\r\nX-Request-Id: b\r\n\r\n",
        b"GET /3 HTTP/1.1\r\nHost: reviews\r\nX-Dup: 1\r\nX-Dup: 2\r\nX-Request-Id: c\r\n\r\n",
        b"GET http://reviews/4 HTTP/1.1\r\nHost: other\r\nX-Request-Id: d\r\n\r\n",
    )
    h1, h2, h3, h4 = (fields(h) for h in capture.heads)
    assert h1 == [  # passed through: the client's X-Forwarded-For line replaced by the appended one
        ("Host", "reviews"), ("X-Request-Id", "a"), ("x-forwarded-proto", "http"),
        ("x-forwarded-for", "10.0.0.1, 127.0.0.1"),
    ]  # fmt: skip
    assert [n for n, _ in h2] == ["host", "x-request-id", "x-forwarded-proto", "x-forwarded-for"]
    assert ("x-dup", "1") in h3 and ("x-dup", "2") in h3 and h3[0] == ("host", "reviews")
    assert capture.heads[3].startswith(b"GET /4 HTTP/1.1\r\nhost: reviews\r\n")
    assert h4[0] == ("host", "reviews")


async def test_request_header_ops_and_rewrites_rebuild_the_head(
    capture: HeadServer, proxy: ProxyFactory
) -> None:
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /ops}}]
            headers:
              request: {set: {x-set: one}}
            route: [{destination: {host: reviews}}]
          - match: [{uri: {prefix: /auth}}]
            rewrite: {authority: ratings}
            route: [{destination: {host: reviews}}]
        """)
    p = await proxy(service_entry("reviews", [capture]) + vs)  # type: ignore[list-item]
    await exchange(
        p.port,
        b"GET /ops HTTP/1.1\r\nHost: reviews\r\nX-Request-Id: a\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nHost: reviews\r\nX-Request-Id: b\r\n\r\n",
    )
    ops, auth = (dict(fields(h)) for h in capture.heads)
    assert ops["x-set"] == "one" and ops["host"] == "reviews"
    assert auth["host"] == "ratings"
