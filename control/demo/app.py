"""A tiny demo HTTP service: answers every request with who it is, as JSON.

``python -m meshbus.control.demo.app --name reviews --version v2 --port 9082``

With ``--call HOST --via PORT`` it first calls ``http://HOST/`` through its sidecar's outbound
listener on ``PORT`` and puts the answer in its own (``"called"``), forwarding the request's trace
headers (traceparent, tracestate, b3, x-b3-*) and x-request-id, as Istio asks of applications
(bookinfo's productpage does the same): that is what joins the sidecars' spans into one trace.

Keep-alive HTTP/1.1 on asyncio streams with httptools parsing; good enough to show
routing and canaries through the mesh, not a benchmark origin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

import httptools

PROPAGATED = (
    "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
    "x-b3-sampled", "x-b3-flags", "x-request-id",
)  # fmt: skip


async def _call(host: str, via: int, headers: dict[str, str]) -> Any:
    """GET http://<host>/ through the sidecar's outbound port, with the trace headers passed on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", via)
    try:
        lines = "".join(f"{k}: {headers[k]}\r\n" for k in PROPAGATED if k in headers)
        writer.write(f"GET / HTTP/1.1\r\nhost: {host}\r\n{lines}connection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    try:
        return {"status": status, "body": json.loads(body)}
    except ValueError:
        return {"status": status, "body": body.decode("latin-1")[:200]}


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self.done = True


async def _serve_conn(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    name: str,
    version: str,
    call: tuple[str, int] | None = None,
) -> None:
    try:
        while True:
            req = _Request()
            parser = httptools.HttpRequestParser(req)
            while not req.done:
                data = await reader.read(65536)
                if not data:
                    return
                parser.feed_data(data)
            answer: dict[str, Any] = {
                "service": name,
                "version": version,
                "method": parser.get_method().decode(),
                "path": req.url.decode("latin-1"),
                "host": req.headers.get("host", ""),
                "request_id": req.headers.get("x-request-id", ""),
            }
            if call is not None:
                try:
                    answer["called"] = await _call(call[0], call[1], req.headers)
                except OSError as exc:
                    answer["called"] = {"status": 0, "body": str(exc)}
            body = json.dumps(answer).encode()
            keep = parser.should_keep_alive()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nx-demo-version: {version}\r\n".encode()
                + (b"" if keep else b"connection: close\r\n")
                + b"\r\n"
                + body
            )
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, httptools.HttpParserError):
        return
    finally:
        writer.close()


async def serve(name: str, version: str, host: str, port: int, call: tuple[str, int] | None = None) -> None:
    server = await asyncio.start_server(lambda r, w: _serve_conn(r, w, name, version, call), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print(f"demo {name} {version} listening on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description="meshbus demo service")
    p.add_argument("--name", required=True)
    p.add_argument("--version", default="v1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--call", default=None, metavar="HOST", help="call http://HOST/ for every request")
    p.add_argument("--via", type=int, default=15001, metavar="PORT", help="the sidecar's outbound port")
    a = p.parse_args()
    asyncio.run(serve(a.name, a.version, a.host, a.port, (a.call, a.via) if a.call else None))


if __name__ == "__main__":
    main()
