"""An app that can hang and heal on a signal, for the app health tests (a real process).

``python -m tests.support.hang_app --name ratings-b --port P``: answers every request with
``{"name": NAME}``. SIGUSR1 makes it hang: every request, the health path included, waits without
an answer; SIGUSR2 heals it (the waiting requests are answered then). Each request other than
``/healthz`` is logged as ``served <path>`` when it arrives, so a test counts what reached it, hung
or not. Stdlib only (http.server would block on a hung request; this is asyncio).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal


async def _serve_conn(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, up: asyncio.Event
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if length:
                await reader.readexactly(length)
            if path != "/healthz":
                print(f"served {path}", flush=True)
            await up.wait()
            body = json.dumps({"name": name, "path": path}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def serve(name: str, port: int) -> None:
    up = asyncio.Event()
    up.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, up.clear)
    loop.add_signal_handler(signal.SIGUSR2, up.set)
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    server = await asyncio.start_server(lambda r, w: _serve_conn(r, w, name, up), "127.0.0.1", port)
    print(f"{name} listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description="a test app that hangs on SIGUSR1 and heals on SIGUSR2")
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    asyncio.run(serve(a.name, a.port))


if __name__ == "__main__":
    main()
