"""A tiny demo HTTP service: answers every request with who it is, as JSON.

``python -m meshbus.control.demo.app --name reviews --version v2 --port 9082``

Keep-alive HTTP/1.1 on asyncio streams with httptools parsing; good enough to show
routing and canaries through the mesh, not a benchmark origin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import httptools


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
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, version: str
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
            body = json.dumps(
                {
                    "service": name,
                    "version": version,
                    "method": parser.get_method().decode(),
                    "path": req.url.decode("latin-1"),
                    "host": req.headers.get("host", ""),
                    "request_id": req.headers.get("x-request-id", ""),
                }
            ).encode()
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


async def serve(name: str, version: str, host: str, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: _serve_conn(r, w, name, version), host, port)
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
    a = p.parse_args()
    asyncio.run(serve(a.name, a.version, a.host, a.port))


if __name__ == "__main__":
    main()
