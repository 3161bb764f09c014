"""proxy/tls_stream.TlsStream over real sockets, on asyncio's loop and on uvloop's.

Both ends are TlsStreams with mesh SVIDs (the server requires a client certificate), as between two
sidecars; the protocol above each is a `Peer` that records what it hears.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from meshbus.proxy.mesh.identity import Identity
from meshbus.proxy.tls.stream import TlsStream
from tests.integration.proxy.mesh_pki import MeshCa

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Peer:
    """The protocol above a TlsStream: keeps the bytes and events, optionally echoes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, echo: bool = False) -> None:
        self.loop = loop
        self.echo = echo
        self.transport: Any = None
        self.data = bytearray()
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self._want: tuple[int, asyncio.Future[None]] | None = None
        self.pause_after_first = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks.append(data)
        if self.echo:
            self.transport.write(data)
        if self.pause_after_first and len(self.chunks) == 1:
            self.transport.pause_reading()
        self._check()

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def _check(self) -> None:
        if self._want is not None and len(self.data) >= self._want[0] and not self._want[1].done():
            self._want[1].set_result(None)

    async def until(self, n: int) -> bytes:
        fut: asyncio.Future[None] = self.loop.create_future()
        self._want = (n, fut)
        self._check()
        await fut
        return bytes(self.data)


class Side:
    """One end: the stream, its handshake outcome and the Peer set on success."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, ctx: ssl.SSLContext, *, server: bool, **peer: Any
    ) -> None:
        self.loop = loop
        self.handshake: asyncio.Future[BaseException | None] = loop.create_future()
        self.peer = Peer(loop, **peer)
        self.stream = TlsStream(
            loop,
            ctx,
            server_side=server,
            server_hostname=None,
            on_handshake=self._done,
            handshake_timeout=0.5,
        )

    def _done(self, stream: TlsStream, exc: BaseException | None) -> None:
        self.handshake.set_result(exc)
        if exc is None:
            stream.set_protocol(self.peer)
            self.peer.connection_made(stream)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Any:
    loop = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()

    def runner(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[Any]]) -> Any:
        return loop.run_until_complete(asyncio.wait_for(scenario(loop), 20))

    yield runner
    loop.close()


@pytest.fixture(scope="module")
def ca() -> MeshCa:
    return MeshCa()


async def pair(
    loop: asyncio.AbstractEventLoop, server_id: Identity, client_id: Identity, **server_peer: Any
) -> tuple[Side, Side, asyncio.Server]:
    accepted: asyncio.Queue[Side] = asyncio.Queue()

    def factory() -> TlsStream:
        side = Side(loop, server_id.server_context, server=True, **server_peer)
        accepted.put_nowait(side)
        return side.stream

    srv = await loop.create_server(factory, "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
    port = srv.sockets[0].getsockname()[1]
    client = Side(loop, client_id.client_context, server=False)
    await loop.create_connection(lambda: client.stream, "127.0.0.1", port)  # type: ignore[arg-type,return-value]
    assert await client.handshake is None
    return await accepted.get(), client, srv


def test_records_cross_both_ways_small_and_large(run: Any, ca: MeshCa) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        server, client, srv = await pair(loop, ca.identity(sa="b"), ca.identity(sa="a"), echo=True)
        assert await server.handshake is None
        big = bytes(range(256)) * 4096  # 1 MiB: many records, more than one socket read
        client.peer.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        client.peer.transport.writelines([b"a" * 10, big])
        got = await client.peer.until(18 + 10 + len(big))
        assert got == b"GET / HTTP/1.1\r\n\r\n" + b"a" * 10 + big
        tls = client.peer.transport.get_extra_info("ssl_object")
        assert tls.version() == "TLSv1.3"
        assert client.peer.transport.get_extra_info("peercert") is not None
        assert client.peer.transport.get_extra_info("peername")[1] == srv.sockets[0].getsockname()[1]
        assert not client.peer.transport.can_write_eof()
        client.peer.transport.close()
        srv.close()

    run(scenario)


def test_records_split_anywhere_arrive_whole_in_order(run: Any, ca: MeshCa) -> None:
    """Reads are sized to the ciphertext buffered (proxy/tls/stream.py ``_read``): a record whose start
    came in an earlier chunk decrypts to more than its tail, and the rest must still be read."""

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        server, client, srv = await pair(loop, ca.identity(sa="b"), ca.identity(sa="a"))
        await server.handshake
        messages = [b"a" * 5000, b"b" * 40000, b"c" * 3, b"d" * 16384, b"e" * 700]
        tls = client.stream.ssl_object
        for m in messages:
            tls.write(m)
        wire = client.stream._outgoing.read()  # the records, fed to the server in uneven chunks
        sizes, at, i = [1, 4990, 27, 7, 300, 17000, 16405, 5], 0, 0
        while at < len(wire):
            server.stream.data_received(wire[at : at + sizes[i % len(sizes)]])
            at += sizes[i % len(sizes)]
            i += 1
        assert bytes(server.peer.data) == b"".join(messages)
        assert max(len(c) for c in server.peer.chunks) <= 16384
        client.peer.transport.close()
        srv.close()

    run(scenario)


def test_each_record_is_delivered_as_it_completes_even_behind_records_held_while_paused(
    run: Any, ca: MeshCa
) -> None:
    """A read of one whole record skips asking the BIO what is left (proxy/tls/stream.py ``_read``)
    only when it held nothing before: records held while paused, or a record's start, come first."""

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        server, client, srv = await pair(loop, ca.identity(sa="b"), ca.identity(sa="a"))
        await server.handshake
        tls = client.stream.ssl_object
        records = []
        for i in range(7):
            tls.write(b"record %d" % i)  # one record each, all of one length
            records.append(client.stream._outgoing.read())
        feed, got = server.stream.data_received, server.peer.chunks
        for i in (0, 1):  # one record a chunk: each delivered by the call that brought it
            feed(records[i])
            assert got[-1] == b"record %d" % i
        server.stream.pause_reading()
        feed(records[2])  # held in the BIO
        assert len(got) == 2
        server.stream.resume_reading()  # the held record is read on a later loop turn...
        feed(records[3])  # ...unless a record arrives first: both, oldest first, now
        assert got[2:] == [b"record 2", b"record 3"]
        feed(records[4] + records[5][:10])  # a record and the start of the next
        assert got[4:] == [b"record 4"]
        feed(records[5][10:])
        feed(records[6])
        assert got[5:] == [b"record 5", b"record 6"]
        await asyncio.sleep(0)  # the resumed read finds nothing more
        assert bytes(server.peer.data) == b"".join(b"record %d" % i for i in range(7))
        client.peer.transport.close()
        srv.close()

    run(scenario)


def test_close_sends_close_notify_the_peer_hears_eof_and_writes_after_close_go_nowhere(
    run: Any, ca: MeshCa
) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        server, client, srv = await pair(loop, ca.identity(sa="b"), ca.identity(sa="a"))
        await server.handshake
        client.peer.transport.write(b"last words")
        await server.peer.until(10)
        client.peer.transport.close()
        assert client.peer.transport.is_closing()
        client.peer.transport.write(b"ignored")
        assert await server.peer.lost is None
        assert server.peer.eof  # close_notify, not a bare TCP close
        assert await client.peer.lost is None
        assert bytes(server.peer.data) == b"last words"
        srv.close()

    run(scenario)


def test_paused_reading_holds_decrypted_records_until_resumed(run: Any, ca: MeshCa) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        server, client, srv = await pair(loop, ca.identity(sa="b"), ca.identity(sa="a"))
        await server.handshake
        server.peer.pause_after_first = True
        # three records in one TCP send: the stream decrypts the first, hears pause_reading, stops
        t = client.stream
        t.ssl_object.write(b"one")
        t.ssl_object.write(b"two")
        t.ssl_object.write(b"three")
        t._raw.write(t._outgoing.read())
        await server.peer.until(3)
        assert server.peer.chunks == [b"one"]
        assert not server.peer.transport.is_reading()
        server.peer.transport.resume_reading()
        assert await server.peer.until(11) == b"onetwothree"
        client.peer.transport.close()
        srv.close()

    run(scenario)


def test_an_untrusted_client_is_refused_with_an_alert_the_client_reads(run: Any, ca: MeshCa) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        stranger = MeshCa()  # same trust domain, another root
        server, client, srv = await pair(
            loop, ca.identity(sa="b"), stranger.identity(sa="a", bundle=ca.root_pem)
        )
        exc = await server.handshake
        assert isinstance(exc, ssl.SSLCertVerificationError)
        assert server.peer.transport is None  # never handed to the protocol above
        # TLS 1.3: the client finished its side first; the server's alert ends its connection
        client.peer.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        lost = await client.peer.lost
        assert isinstance(lost, ssl.SSLError)
        assert "UNKNOWN_CA" in (lost.reason or "")
        srv.close()

    run(scenario)


def test_a_silent_client_times_out_and_a_vanishing_one_is_reported(run: Any, ca: MeshCa) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
        accepted: asyncio.Queue[Side] = asyncio.Queue()
        ident = ca.identity(sa="b")

        def factory() -> TlsStream:
            side = Side(loop, ident.server_context, server=True)
            accepted.put_nowait(side)
            return side.stream

        srv = await loop.create_server(factory, "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
        addr = srv.sockets[0].getsockname()
        silent = socket.create_connection(addr)
        vanishing = socket.create_connection(addr)
        try:
            sides = [await accepted.get(), await accepted.get()]
            vanishing.close()
            first, second = await asyncio.gather(*(s.handshake for s in sides))
        finally:
            silent.close()
            srv.close()
        return first, second

    first, second = run(scenario)
    kinds = {type(first), type(second)}
    assert kinds == {TimeoutError, ConnectionResetError}


def test_a_connection_lost_before_the_protocol_is_set_still_reaches_it(run: Any, ca: MeshCa) -> None:
    """A client's pool takes the stream one loop iteration after the handshake; if the TCP connection
    died in between, the upstream connection must still hear connection_lost (not wait forever)."""

    async def scenario(loop: asyncio.AbstractEventLoop) -> BaseException | None:
        server, client, srv = await pair(loop, ca.identity(sa="b"), ca.identity(sa="a"))
        await server.handshake
        handshaken: asyncio.Future[None] = loop.create_future()

        def done(_s: TlsStream, exc: BaseException | None) -> None:
            handshaken.set_result(None)

        late = TlsStream(
            loop, ca.identity(sa="a").client_context, server_side=False, server_hostname=None,
            on_handshake=done, handshake_timeout=0.5,
        )  # fmt: skip
        port = srv.sockets[0].getsockname()[1]
        await loop.create_connection(lambda: late, "127.0.0.1", port)  # type: ignore[arg-type,return-value]
        await handshaken
        late.connection_lost(ConnectionResetError("reset by peer"))  # as the TCP transport reports it
        peer = Peer(loop)
        late.set_protocol(peer)
        peer.connection_made(late)
        assert late.is_closing()
        exc = await peer.lost
        late.abort()  # the TCP connection itself is still open: this test only played its loss
        client.peer.transport.close()
        srv.close()
        return exc

    assert isinstance(run(scenario), ConnectionResetError)
