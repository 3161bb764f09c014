"""HTTP/1.1 correctness through the proxy: keep-alive, pipelining, streaming, 100-continue, HEAD/204,
WebSocket upgrade, request ids and forwarding headers, HTTP-proxy (absolute-form) mode, backpressure."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid

import pytest

from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry
from tests.integration.proxy.upstreams import Client, fetch
from tests.support.bounded import eventually
from tests.support.processes import run_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_keep_alive_reuses_one_upstream_connection(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        for i in range(20):
            r = await c.request(path=f"/{i}")
            assert r.status == 200 and r.json()["path"] == f"/{i}"
    finally:
        await c.close()
    assert u.connections == 1


async def test_pipelined_requests_are_answered_in_order(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        # the first is slow: the others must still come back after it, in order
        await c.send_raw(
            b"GET /1 HTTP/1.1\r\nHost: reviews\r\nx-test-delay: 0.2\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: reviews\r\nContent-Length: 4\r\n\r\nbody"
            b"GET /nope HTTP/1.1\r\nHost: unknown\r\n\r\n"
            b"GET /4 HTTP/1.1\r\nHost: reviews\r\n\r\n"
        )
        rs = [await c.read_response() for _ in range(4)]
    finally:
        await c.close()
    assert [r.status for r in rs] == [200, 200, 404, 200]
    assert rs[0].json()["path"] == "/1" and rs[1].json()["body_len"] == 4 and rs[3].json()["path"] == "/4"


async def test_chunked_streaming_both_ways(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        await c.send_raw(
            b"POST /up HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await u.wait_for_body(b"hello")  # streamed: the first chunk is upstream before the rest is sent
        await c.send_raw(b"6\r\n world\r\n0\r\n\r\n")
        r = await c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 11
        assert u.seen[-1].body == b"hello world"
        r = await c.request(path="/down", headers=[("x-test-action", "chunked"), ("x-test-chunks", "4")])
        assert r.status == 200 and r.body == b"part0;part1;part2;part3;"
        assert r.headers["transfer-encoding"] == "chunked"
        # the connection is still good after both
        assert (await c.request(path="/after")).status == 200
    finally:
        await c.close()


async def test_close_delimited_upstream_body_is_rechunked(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        r = await c.request(path="/eof", headers=[("x-test-action", "eof-body")])
        assert r.status == 200 and r.json()["path"] == "/eof"
        assert (await c.request(path="/again")).status == 200
    finally:
        await c.close()


async def test_expect_100_continue(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        await c.send_raw(
            b"PUT /x HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        await c.send_raw(b"abc")
        r = await c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 3
        assert "expect" not in u.seen[-1].headers
    finally:
        await c.close()


async def test_head_204_304_have_no_body_and_keep_the_connection(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        r = await c.request("HEAD", "/h")
        assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0
        r = await c.request(path="/n", headers=[("x-test-status", "204")])
        assert r.status == 204 and r.body == b""
        r = await c.request(path="/n", headers=[("x-test-status", "304")])
        assert r.status == 304 and r.body == b""
        r = await c.request(path="/after")
        assert r.status == 200 and r.json()["path"] == "/after"
    finally:
        await c.close()
    assert u.connections == 1


async def test_websocket_upgrade_is_tunnelled(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    try:
        await c.send_raw(
            b"GET /ws HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101") and b"upgrade: websocket" in head.lower()
        await c.send_raw(b"frame-1")
        assert await asyncio.wait_for(c.reader.readexactly(12), 5) == b"echo:frame-1"
        await c.send_raw(b"frame-2")
        assert await asyncio.wait_for(c.reader.readexactly(12), 5) == b"echo:frame-2"
    finally:
        await c.close()


async def test_request_id_and_forwarding_headers(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    r = await fetch(
        p.port,
        "/",
        headers=[
            ("x-request-id", "given-id"),
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
        ],
    )
    seen = r.json()["headers"]
    assert seen["x-request-id"] == "given-id"
    assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    for hop in ("connection", "x-hop", "keep-alive", "proxy-connection"):
        assert hop not in seen
    r1, r2 = await fetch(p.port, "/"), await fetch(p.port, "/")
    ids = {r1.json()["headers"]["x-request-id"], r2.json()["headers"]["x-request-id"]}
    assert len(ids) == 2 and all(uuid.UUID(i).version == 4 for i in ids)


async def test_inbound_listener_forwards_to_the_app_port(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams("app")
    p = await proxy(service_entry("reviews", [app]), app_port=app.port)
    r = await fetch(p.inbound_port, "/in", host="anything")
    assert r.status == 200 and r.json()["version"] == "app"


async def test_slow_client_backpressure_delivers_a_large_body(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    c = await Client.connect(p.port)
    size = 8 * 1024 * 1024
    try:
        await c.send_raw(
            b"GET /big HTTP/1.1\r\nHost: reviews\r\nx-test-action: big\r\nx-test-size: %d\r\n\r\n" % size
        )
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        conns = list(p.server.connections)
        assert conns

        async def upstream_paused() -> bool:  # we do not read: the proxy must pause the upstream
            ex = conns[0].current
            up = ex.conn if ex is not None else None
            return bool(conns[0].write_paused and up is not None and not up.transport.is_reading())

        await eventually("the proxy to pause reading the upstream", upstream_paused, timeout=5)
        # paused with a write buffer near the high-water mark, not the 8 MiB body
        assert conns[0].transport.get_write_buffer_size() < 4 * 1024 * 1024
        got = 0
        while got < size:
            got += len(await asyncio.wait_for(c.reader.read(1 << 20), 5))
        assert got == size
    finally:
        await c.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed (apt-get install -y curl)")
async def test_curl_through_http_proxy_mode(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams("v1")
    p = await proxy(service_entry("reviews", [u]))
    env = {
        **os.environ,
        "HTTP_PROXY": f"http://127.0.0.1:{p.port}",
        "http_proxy": f"http://127.0.0.1:{p.port}",
    }
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    code, out, err = await run_command(
        "curl", "-sS", "-i", "http://reviews:9080/via-proxy", env=env, timeout=10
    )
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 200")
    assert u.seen[-1].path == "/via-proxy"
