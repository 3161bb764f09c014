"""Trailer sections on real sockets: a client's endless trailer field gets 431 and a close before it
has all been sent (DPE, ``http1.headers_too_large`` in the access log, as Envoy), and an upstream's
cuts its response short (UPE); neither is buffered without bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.proxy.conftest import (
    LogCapture,
    ProxyFactory,
    ProxyHandle,
    UpstreamFactory,
    service_entry,
)
from tests.integration.proxy.upstreams import Upstream, fetch, read_until_closed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LIMIT = 4096
CAP = 4 * 1024 * 1024  # what the client would send at most


async def _logged(
    upstreams: UpstreamFactory, proxy: ProxyFactory, **overrides: int
) -> tuple[Upstream, ProxyHandle, LogCapture]:
    """An upstream, a proxy routing "reviews" to it, and the proxy's access-log records."""
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]), **overrides)
    log = LogCapture()
    p.server.access_log = log
    return u, p, log


async def _exchange(
    port: int, first: bytes, timeout: float, then: tuple[Callable[[], Awaitable[None]], bytes] | None = None
) -> bytes:
    """Send ``first`` (and, once ``then``'s wait is over, its bytes); all the proxy answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        if then is not None:
            await then[0]()
            writer.write(then[1])
        async with asyncio.timeout(timeout):
            return await read_until_closed(reader)
    finally:
        writer.close()


async def test_an_endless_request_trailer_gets_431_and_a_close_before_it_is_all_sent(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    _u, p, log = await _logged(upstreams, proxy, max_header_bytes=LIMIT)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    answer = asyncio.ensure_future(read_until_closed(reader))
    sent = 0
    try:
        writer.write(
            b"POST /t HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-Big: "
        )
        piece = b"b" * 1024
        with contextlib.suppress(ConnectionError):
            while sent < CAP and not answer.done():
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
                await asyncio.sleep(0)  # a turn of the loop: the proxy (in this process) reads
        async with asyncio.timeout(10):
            out = await answer
    finally:
        writer.close()
    assert out.startswith(b"HTTP/1.1 431 "), out[:80]
    assert b"connection: close\r\n" in out and b"x-meshbus-flags: DPE\r\n" in out
    assert sent < LIMIT + 256 * 1024, sent  # refused within the limit plus a read, not at the cap
    rec = log.records[-1]
    assert (rec.response_code, rec.response_flags) == (431, "DPE")
    assert rec.response_code_details == "http1.headers_too_large"
    assert (await fetch(p.port, "/")).status == 200


async def test_a_malformed_chunk_after_the_head_is_answered_400_not_left_waiting(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    # The request was forwarded at its head; before, its connection waited for an upstream answer.
    # (An error in the same read as the head never had an exchange: the chunk goes once it is forwarded.)
    u, p, log = await _logged(upstreams, proxy)
    head = b"POST /c HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n"
    out = await _exchange(p.port, head, 5, (lambda: u.wait_for_body(b"x"), b"ZZ\r\n"))
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    rec = log.records[-1]
    assert (rec.response_code, rec.response_flags, rec.response_code_details) == (
        400,
        "DPE",
        "http1.codec_error",
    )


async def test_an_endless_upstream_trailer_cuts_the_response_short_with_upe(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u, p, log = await _logged(upstreams, proxy)
    out = await _exchange(
        p.port, b"GET /t HTTP/1.1\r\nHost: reviews\r\nX-Test-Action: endless-trailer\r\n\r\n", 30
    )
    assert out.startswith(b"HTTP/1.1 200 "), out[:80]
    assert b"part" in out and not out.endswith(b"0\r\n\r\n")  # the head had gone: reset, no last chunk
    assert u.trailer_sent < 8 * 1024 * 1024, u.trailer_sent  # the proxy let go at ~1 MiB, not at 64
    assert "UPE" in log.records[-1].response_flags
