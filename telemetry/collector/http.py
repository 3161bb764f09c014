"""meshbus-telemetry's HTTP port (default 15090): ``/metrics`` for Prometheus, the web view, its API.

    GET /metrics             the merged mesh-wide series, Prometheus text 0.0.4
    GET /                    the live service graph (web/index.html, app.js, style.css: files of this package)
    GET /api/graph?window=10 Kiali-shaped graph JSON (every replica's traffic of the last N seconds)
    GET /api/top?window=10   per service and per workload: rps, success rate, p50/p90/p99, mTLS share
    GET /healthz, /ready     liveness; readiness (200 once the bus is connected and the stream exists)

A small HTTP/1.1 server on asyncio streams: GET and HEAD only, one request per connection
(Prometheus and browsers reconnect happily); a request head over 16 KiB or slower than 10 s is
dropped. The page and its script are served from the package, so nothing loads from the internet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, list[str]]], Awaitable[tuple[int, str, bytes]]]

MAX_HEAD: Final = 16 * 1024
HEAD_TIMEOUT: Final = 10.0
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
STATIC: Final[dict[str, str]] = {
    "/": "index.html",
    "/index.html": "index.html",
    "/app.js": "app.js",
    "/style.css": "style.css",
}
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def static_file(name: str) -> tuple[str, bytes]:
    data = resources.files("meshbus.telemetry.collector").joinpath("web", name).read_bytes()
    return _TYPES[name[name.rfind(".") :]], data


class HttpServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            if len(head) > MAX_HEAD:
                return
            status, ctype, body, method = await self._answer(head)
            out = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
            ).encode()
            writer.write(out if method == "HEAD" else out + body)
            await writer.drain()
        except ConnectionError:
            pass
        except Exception:  # one bad request must not stop the server
            log.exception("HTTP request failed")
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[int, str, bytes, str]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n", "GET"
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n", method
        url = urlsplit(target)
        handler = self.routes.get(url.path)
        if handler is not None:
            status, ctype, body = await handler(parse_qs(url.query))
            return status, ctype, body, method
        name = STATIC.get(url.path)
        if name is not None:
            ctype, data = static_file(name)
            return 200, ctype, data, method
        return 404, "text/plain", b"not found\n", method
