"""Requests that fail to parse, on real sockets, answered as Envoy 1.40 answers them (measured): a head
that fails gets 400/431 and a close, logged and counted like any local reply (DPE, Envoy's response
code details, no method, path or authority); what the same read held before the error is answered
first, in order; and an error in the body of a request whose response has gone already closes the
connection instead of sending a second, unsolicited response."""

from __future__ import annotations

import asyncio
import re

import pytest

from meshbus.telemetry.exposition import render_prometheus
from tests.integration.proxy.conftest import (
    LogCapture,
    ProxyFactory,
    ProxyHandle,
    UpstreamFactory,
    service_entry,
)
from tests.integration.proxy.upstreams import HeadServer, fetch, read_until_closed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LIMIT = 4096


async def _until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await read_until_closed(reader)


async def _send(port: int, data: bytes) -> bytes:
    """Send ``data`` at once; all the proxy answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await _until_closed(reader)
    finally:
        writer.close()


async def _proxy(upstreams: UpstreamFactory, proxy: ProxyFactory) -> tuple[ProxyHandle, LogCapture]:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]), max_header_bytes=LIMIT)
    log = LogCapture()
    p.server.access_log = log
    return p, log


def _istio_requests(p: ProxyHandle, code: int) -> list[str]:
    text = render_prometheus(p.server.registry)
    return [
        x
        for x in text.splitlines()
        if x.startswith("istio_requests_total{") and f'response_code="{code}"' in x
    ]


@pytest.mark.parametrize(
    ("raw", "status", "details"),
    [
        (b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * 2 * LIMIT + b"\r\n\r\n", 431,
         "http1.headers_too_large"),
        (b"G ET / HTTP/1.1\r\nHost: reviews\r\n\r\n", 400, "http1.codec_error"),
        (b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400, "http1.codec_error"),  # Envoy's details here: http1.content_length_and_chunked_not_allowed
    ],
    ids=["head-too-large", "bad-method", "cl-and-te"],
)  # fmt: skip
async def test_a_head_that_fails_is_logged_and_counted_with_dpe(
    upstreams: UpstreamFactory, proxy: ProxyFactory, raw: bytes, status: int, details: str
) -> None:
    p, log = await _proxy(upstreams, proxy)
    out = await _send(p.port, raw)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
    assert b"x-meshbus-flags: DPE\r\n" in out and b"connection: close\r\n" in out
    (rec,) = log.records
    assert (rec.response_code, rec.response_flags, rec.response_code_details) == (status, "DPE", details)
    # as Envoy logs it: nothing of the request is known but its connection and protocol
    assert (rec.method, rec.path, rec.authority, rec.request_id) == (None, None, None, None)
    assert (rec.protocol, rec.downstream_remote_address) == ("HTTP/1.1", "127.0.0.1")
    (line,) = _istio_requests(p, status)
    assert 'response_flags="DPE"' in line and line.endswith(" 1"), line
    assert (await fetch(p.port, "/")).status == 200


async def test_a_body_error_in_the_read_of_its_head_is_logged_with_the_request(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    p, log = await _proxy(upstreams, proxy)
    out = await _send(
        p.port, b"POST /c HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\nZZ\r\n"
    )
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    (rec,) = log.records
    assert (rec.method, rec.path, rec.authority) == ("POST", "/c", "reviews")
    assert (rec.response_code, rec.response_flags, rec.response_code_details) == (
        400,
        "DPE",
        "http1.codec_error",
    )


async def test_requests_before_a_failed_head_in_the_same_read_are_answered_first(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    p, log = await _proxy(upstreams, proxy)
    out = await _send(
        p.port,
        b"GET /1 HTTP/1.1\r\nHost: reviews\r\n\r\nGET /2 HTTP/1.1\r\nHost: reviews\r\n\r\n"
        b"G ET /3 HTTP/1.1\r\nHost: reviews\r\n\r\n",
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200", b"200", b"400"], out
    assert [(r.path, r.response_code, r.response_flags) for r in log.records] == [
        ("/1", 200, "-"),
        ("/2", 200, "-"),
        (None, 400, "DPE"),
    ]


async def test_a_body_error_after_the_response_closes_without_a_second_response(proxy: ProxyFactory) -> None:
    # The upstream answers at the head, so the exchange is over while the body still arrives; a bad
    # chunk after that has no request to answer: Envoy resets the connection, and so does meshbus.
    origin = await HeadServer(lambda _head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").start()
    try:
        p = await proxy(service_entry("reviews", [origin]))  # type: ignore[list-item]
        log = LogCapture()
        p.server.access_log = log
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        try:
            writer.write(
                b"POST /u HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            async with asyncio.timeout(5):
                first = await reader.readuntil(b"\r\n\r\nok")
            assert first.startswith(b"HTTP/1.1 200 "), first
            writer.write(b"ZZ\r\n")
            rest = await _until_closed(reader)
        finally:
            writer.close()
        assert rest == b""  # closed, nothing more: before, an unsolicited 400 came here
        assert [(r.path, r.response_code) for r in log.records] == [("/u", 200)]
    finally:
        await origin.stop()
