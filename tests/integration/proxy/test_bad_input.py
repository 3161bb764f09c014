"""Bad input from either side: the client gets a clear status, never a hung connection or a dead proxy."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Client, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, return everything the proxy sends back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
        return out
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: reviews\r\nBad Header: x\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         b"400"),
        (b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
         b"400"),
        (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", b"431"),
    ],
    ids=["garbage", "bad-header", "cl-then-te", "te-then-cl", "too-large"],
)  # fmt: skip
async def test_bad_requests_get_4xx_and_close(
    upstreams: UpstreamFactory, proxy: ProxyFactory, raw: bytes, status: bytes
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]), max_header_bytes=4096)
    out = await raw_exchange(p.port, raw)
    assert out.startswith(b"HTTP/1.1 " + status), out[:80]
    assert not u.seen  # nothing reached the upstream (no smuggling)
    assert (await fetch(p.port, "/")).status == 200


async def test_slowloris_gets_408(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]), header_timeout=0.4)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    t0 = time.monotonic()
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: reviews\r\n")
        out = b""
        async with asyncio.timeout(5):
            for _ in range(40):  # dribble a header byte at a time; the proxy must not wait forever
                writer.write(b"X")
                try:
                    out = await asyncio.wait_for(reader.read(1024), 0.05)
                except TimeoutError:
                    continue
                break
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert out.startswith(b"HTTP/1.1 408"), out
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize(
    ("action", "status", "flags"),
    [("reset", 503, "UC"), ("garbage", 502, "UPE")],
)
async def test_upstream_reset_or_garbage(
    upstreams: UpstreamFactory, proxy: ProxyFactory, action: str, status: int, flags: str
) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries: {attempts: 0}
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    r = await fetch(p.port, "/", headers=[("x-test-action", action)])
    assert r.status == status and r.flags == flags
    assert (await fetch(p.port, "/")).status == 200


async def test_upstream_reset_is_retried_when_policy_says_reset(
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
          - route: [{destination: {host: reviews}}]
            retries: {attempts: 2, retryOn: reset}
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    r = await fetch(p.port, "/", headers=[("x-test-action", "reset")])
    assert r.status == 503 and r.flags == "UC,URX"
    assert len(u.seen) == 3


async def test_upstream_hang_gives_504(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    u.mode = "hang"
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            timeout: 0.3s
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    r = await fetch(p.port, "/")
    assert r.status == 504 and r.flags == "UT"


async def test_upstream_down_gives_503_uf(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    await u.stop()  # nothing listens there any more: connection refused
    r = await fetch(p.port, "/")
    assert r.status == 503 and r.flags in ("UF", "UF,URX")
    assert r.body.startswith(b"upstream connect error")


async def test_no_route_404(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    r = await fetch(p.port, "/", host="not-a-service")
    assert r.status == 404 and r.flags == "NR" and r.body == b"no route\n"


# A small alphabet that hits the parser's edges: methods, separators, CR/LF, framing headers.
_PIECES = st.sampled_from(
    [b"GET", b"POST", b" ", b"/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b":", b"Host: reviews",
     b"Content-Length: 5", b"Content-Length: -1", b"Transfer-Encoding: chunked", b"\x00", b"\xff",
     b"0\r\n\r\n", b"abc", b"\t", b"Connection: close", b"Expect: 100-continue"]
)  # fmt: skip
_JUNK = st.lists(_PIECES, min_size=1, max_size=25).map(b"".join) | st.binary(min_size=1, max_size=200)


@pytest.mark.timeout(90)
async def test_property_malformed_input_never_breaks_the_proxy(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]), header_timeout=0.5)
    good = Client

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(junk=_JUNK)
    def check(junk: bytes) -> None:
        fut = asyncio.run_coroutine_threadsafe(one(junk), loop)
        fut.result(timeout=10)

    async def one(junk: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(junk)
        try:
            # whatever the proxy answers, it must answer or close within the header timeout
            async with asyncio.timeout(3):
                while await reader.read(65536):
                    writer.write_eof() if writer.can_write_eof() else None
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
        c = await good.connect(p.port)
        try:
            r = await c.request(path="/after-junk")
            assert r.status == 200
        finally:
            await c.close()

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(check)
    assert p.server.runtime is not None
