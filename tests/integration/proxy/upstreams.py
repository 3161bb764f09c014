"""Real upstream servers and a raw client for the proxy's integration tests (real sockets, no mocks).

``Upstream`` answers with JSON naming its ``version`` label and what it received. Behaviour is
chosen per request by headers (``x-test-status``, ``x-test-delay``, ``x-test-action``) or for the
whole server by ``mode`` / ``fail_first`` (so retries and outlier tests need no request changes):
  action/mode: ok | reset (close without answering) | hang | garbage | chunked | slow-read | eof-body
  | endless-trailer (a chunked body whose trailer field never ends: ``trailer_sent`` counts it)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshbus.proxy.codec.http1 import (
    BODY,
    END,
    HEAD,
    UPGRADE,
    ProtocolError,
    RequestSession,
    ResponseSession,
    chunk,
    serialize_request_head,
    serialize_response_head,
)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    version: str = "v1"
    mode: str = "ok"
    fail_first: int = 0  # answer the first N requests with fail_status
    fail_status: int = 503
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: Any = None
    _transports: set[Any] = field(default_factory=set)
    _tasks: set[Any] = field(default_factory=set)
    _arrived: asyncio.Event | None = None
    partial: bytes = b""  # the body received so far of the request being read (streaming tests)
    trailer_sent: int = 0  # bytes of an endless trailer written before the proxy closed the connection
    _chunk: asyncio.Event | None = None

    async def start(self) -> Upstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _UpstreamProtocol(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._arrived = asyncio.Event()
        self._chunk = asyncio.Event()
        return self

    async def stop(self) -> None:
        self._server.close()
        for t in list(self._transports):
            t.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def wait_for_body(self, prefix: bytes, timeout: float = 5.0) -> None:
        """Until the request being read has received a body starting with ``prefix`` (before its end)."""
        async with asyncio.timeout(timeout):
            while not self.partial.startswith(prefix):
                self._chunk.clear()  # type: ignore[union-attr]
                await self._chunk.wait()  # type: ignore[union-attr]

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < n:
                self._arrived.clear()  # type: ignore[union-attr]
                await self._arrived.wait()  # type: ignore[union-attr]


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.session = RequestSession()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.head: Any = None
        self.body: list[bytes] = []
        self.tunnel = False
        self.queue: asyncio.Queue[tuple[Any, bytes]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.up.connections += 1
        self.up._transports.add(transport)
        self.task = asyncio.get_running_loop().create_task(self._serve())
        self.up._tasks.add(self.task)

    def connection_lost(self, exc: Exception | None) -> None:
        self.up._transports.discard(self.transport)
        if self.task is not None:
            self.task.cancel()
            self.up._tasks.discard(self.task)

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.transport.write(b"echo:" + data)
            return
        try:
            events = self.session.feed(data)
        except ProtocolError:
            self.transport.close()
            return
        for kind, payload in events:
            if kind == HEAD:
                self.head, self.body = payload, []
                self.up.partial = b""
            elif kind == BODY:
                self.body.append(payload)
                self.up.partial = b"".join(self.body)
                if self.up._chunk is not None:
                    self.up._chunk.set()
            elif kind == END:
                self.queue.put_nowait((self.head, b"".join(self.body)))
            elif kind == UPGRADE:
                self.tunnel = True
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
                )
                if payload:
                    self.transport.write(b"echo:" + payload)
                return

    async def _serve(self) -> None:
        while True:
            head, body = await self.queue.get()
            if head.upgrade:
                continue
            await self._answer(head, body)

    async def _answer(self, head: Any, body: bytes) -> None:
        up = self.up
        h = head.hdict
        up.seen.append(Seen(head.method, head.target, dict(h), body))
        if up._arrived is not None:
            up._arrived.set()
        delay = float(h.get("x-test-delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        action = h.get("x-test-action", up.mode)
        status = int(h.get("x-test-status", "200"))
        if up.fail_first > 0:
            up.fail_first -= 1
            status = up.fail_status
        if action == "reset":
            self.transport.abort()
            return
        if action == "hang":
            await asyncio.sleep(3600)
        if action == "garbage":
            self.transport.write(b"SPDY/9 what is this\r\n\r\n")
            self.transport.close()
            return
        payload = json.dumps(
            {
                "version": up.version,
                "method": head.method,
                "path": head.target,
                "headers": dict(h),
                "body_len": len(body),
            }
        ).encode()
        extra = [("x-upstream-version", up.version)]
        if head.method == "HEAD" or status in (204, 304):
            cl = [] if status in (204, 304) else [("content-length", str(len(payload)))]
            self.transport.write(serialize_response_head(status, cl + extra))
            return
        if action == "chunked":
            self.transport.write(serialize_response_head(status, [("transfer-encoding", "chunked"), *extra]))
            n = int(h.get("x-test-chunks", "3"))
            for i in range(n):
                self.transport.write(chunk(f"part{i};".encode()))
                await asyncio.sleep(0.01)
            self.transport.write(b"0\r\n\r\n")
            return
        if action == "endless-trailer":
            head = serialize_response_head(status, [("transfer-encoding", "chunked"), *extra])
            self.transport.write(head + chunk(b"part") + b"0\r\nX-Big: ")
            block = b"t" * 65536
            while not self.transport.is_closing() and up.trailer_sent < 64 * 1024 * 1024:
                self.transport.write(block)
                up.trailer_sent += len(block)
                await asyncio.sleep(0)  # a turn of the loop: the proxy reads
            self.transport.write(b"\r\n\r\n")
            return
        if action == "big":
            size = int(h.get("x-test-size", str(4 * 1024 * 1024)))
            self.transport.write(serialize_response_head(status, [("content-length", str(size)), *extra]))
            block = b"x" * 65536
            sent = 0
            while sent < size:
                n = min(len(block), size - sent)
                self.transport.write(block[:n])
                sent += n
                await asyncio.sleep(0)
            return
        if action == "eof-body":
            self.transport.write(serialize_response_head(status, [("connection", "close"), *extra]) + payload)
            self.transport.close()
            return
        self.transport.write(
            serialize_response_head(
                status, [("content-type", "application/json"), ("content-length", str(len(payload))), *extra]
            )
            + payload
        )


@dataclass
class HeadServer:
    """A raw upstream for byte-exact tests: keeps each request head (bodyless requests) as received and
    answers it with ``reply(head)``, bytes the test wrote itself (no serializer in between)."""

    reply: Callable[[bytes], bytes]
    heads: list[bytes] = field(default_factory=list)
    port: int = 0
    version: str = "v1"
    server: asyncio.Server | None = None

    async def start(self) -> HeadServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                writer.write(self.reply(head))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# ---- a raw HTTP/1.1 client (keeps the bytes on the wire under the test's control) ------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def flags(self) -> str | None:
        return self.headers.get("x-meshbus-flags")


class Client:
    """One keep-alive connection; ``request`` sends one request and reads one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.session = ResponseSession()
        self.pending: list[tuple[int, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, *, head_request: bool = False, timeout: float = 10.0) -> Response:
        self.session.expect(head_request)
        status, headers, body, done = 0, {}, [], False
        async with asyncio.timeout(timeout):
            while not done:
                if self.pending:
                    events, self.pending = self.pending, []
                else:
                    data = await self.reader.read(65536)
                    if not data:
                        # a close-delimited body ends here; anything else is a broken response
                        if status:
                            break
                        raise ConnectionError("connection closed before a response")
                    events = self.session.feed(data)
                for i, (kind, payload) in enumerate(events):
                    if kind == HEAD:
                        status, headers = payload.status, dict(payload.headers)
                    elif kind == BODY:
                        body.append(payload)
                    elif kind == END:
                        done = True
                        self.pending = events[i + 1 :]
                        break
        return Response(status, headers, b"".join(body))

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        host: str = "reviews",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Response:
        hdrs = [("host", host), *(headers or [])]
        if body is not None:
            hdrs.append(("content-length", str(len(body))))
        await self.send_raw(serialize_request_head(method, path, hdrs) + (body or b""))
        return await self.read_response(head_request=method == "HEAD", timeout=timeout)


async def fetch(port: int, path: str = "/", **kw: Any) -> Response:
    """One request on a fresh connection."""
    c = await Client.connect(port)
    try:
        return await c.request(path=path, **kw)
    finally:
        await c.close()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """All the peer sends until it closes (a reset counts as a close)."""
    out = b""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            out += data
    return out


def send_request_bytes(method: str, path: str, host: str) -> bytes:
    return serialize_request_head(method, path, [("host", host)])
