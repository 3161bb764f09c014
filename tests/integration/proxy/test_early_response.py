"""An origin that answers before the client has sent all of its request body (an early 413 or 401), on
real sockets: as Envoy 1.40 (measured), the response says ``connection: close`` and the connection
ends after it; what the client still sends is dropped, never buffered, so a large upload after the
answer cannot stall the connection (before, reading paused past 64 KiB of body held for an exchange
that was over, and nothing resumed it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.integration.proxy.conftest import LogCapture, ProxyFactory, ProxyHandle, service_entry
from tests.integration.proxy.upstreams import HeadServer, fetch, read_until_closed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

EARLY = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
BODY = 4 * 1024 * 1024  # well past the 64 KiB the exchange would hold for an upstream


class EarlyOrigin(HeadServer):
    """Answers a POST at its head, its body unread, and anything else 200; then reads and drops what
    comes until the proxy closes."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            writer.write(self.reply(head))
            await read_until_closed(reader)
        writer.close()


@contextlib.asynccontextmanager
async def _connected(
    proxy: ProxyFactory,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, ProxyHandle, LogCapture]]:
    """A proxy in front of an EarlyOrigin, its access log kept, and a client connection to it."""
    origin = await EarlyOrigin(lambda head: EARLY if head.startswith(b"POST ") else OK).start()
    try:
        p = await proxy(service_entry("reviews", [origin]))  # type: ignore[list-item]
        log = LogCapture()
        p.server.access_log = log
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        try:
            async with asyncio.timeout(10):
                yield reader, writer, p, log
        finally:
            writer.close()
    finally:
        await origin.stop()


async def _answered_early(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: bytes = b""
) -> bytes:
    """Send the head of a large upload (and its first KiB unless it expects 100); the early answer's
    head, after any 100 Continue, once its body has come too."""
    head = b"POST /up HTTP/1.1\r\nHost: reviews\r\nContent-Length: %d\r\n%s\r\n" % (BODY, extra)
    writer.write(head if extra else head + b"x" * 1024)
    first = await reader.readuntil(b"\r\n\r\n")
    if first.startswith(b"HTTP/1.1 100 "):
        first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 413 "), first
    assert await reader.readexactly(8) == b"too big\n"
    return first.lower()


async def test_an_early_response_says_close_and_the_connection_ends_after_it(proxy: ProxyFactory) -> None:
    async with _connected(proxy) as (reader, writer, _, log):
        head = await _answered_early(reader, writer)
        assert b"\r\nconnection: close\r\n" in head, head
        writer.write(b"x" * 1024)  # more of the body: dropped, not answered
        assert await read_until_closed(reader) == b""  # closed, nothing after the response
    assert [(x.path, x.response_code, x.response_flags) for x in log.records] == [("/up", 413, "-")]


async def test_a_large_body_after_an_early_response_does_not_stall_the_connection(
    proxy: ProxyFactory,
) -> None:
    async with _connected(proxy) as (reader, writer, p, log):
        await _answered_early(reader, writer)
        # more of the upload, well past 64 KiB: before, the proxy paused reading for an exchange that
        # was over and this never finished. Now it is read and dropped until the client is done (or a
        # second has passed, LINGER), as a close with unread bytes would reset the connection
        for _ in range(16):
            writer.write(b"x" * 65536)
            await writer.drain()
        writer.write_eof()
        assert await read_until_closed(reader) == b""
        # the proxy is fine: the next connection is answered and stays open
        r = await fetch(p.port, "/next")
        assert (r.status, r.body) == (200, b"ok\n")
        assert r.headers.get("connection") != "close"
    assert [(x.path, x.response_code, x.response_flags) for x in log.records] == [
        ("/up", 413, "-"),
        ("/next", 200, "-"),
    ]


async def test_a_client_waiting_for_100_continue_that_gets_a_final_response_is_told_to_close(
    proxy: ProxyFactory,
) -> None:
    # Envoy 1.40 (measured) sends its own 100 Continue at once too, then the early 413 with
    # connection: close
    async with _connected(proxy) as (reader, writer, _, log):
        head = await _answered_early(reader, writer, b"Expect: 100-continue\r\n")
        assert b"\r\nconnection: close\r\n" in head, head
        assert await read_until_closed(reader) == b""  # closed without the body ever coming
    assert [(x.path, x.response_code, x.response_flags) for x in log.records] == [("/up", 413, "-")]
