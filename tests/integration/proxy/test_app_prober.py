"""The app probe over real sockets: HTTP status verdicts, a hung app, a closed port, a TCP probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meshbus.bus.schemas.discovery import APP_HEALTHY, APP_UNHEALTHY
from meshbus.proxy.mesh.probe import ProbeSpec, ProbeTracker
from meshbus.proxy.mesh.prober import AppProber, probe_once
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(20)


class App:
    """Answers the status in ``status`` (None: never answers) and records the request heads."""

    def __init__(self) -> None:
        self.status: int | None = 200
        self.heads: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.heads.append(await reader.readuntil(b"\r\n\r\n"))
        if self.status is None:
            await reader.read()  # hung: until the prober gives up and closes
        else:
            writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
            await writer.drain()
        writer.close()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    a = App()
    server = await asyncio.start_server(a.handle, "127.0.0.1", 0)
    a.port = server.sockets[0].getsockname()[1]
    async with server:
        yield a


async def test_http_probe_verdicts(app: App) -> None:
    spec = ProbeSpec("http", app.port, "/healthz", timeout_s=0.3)
    assert await probe_once(spec) == (True, f"GET :{app.port}/healthz answered 200")
    head = app.heads[-1]
    assert head.startswith(b"GET /healthz HTTP/1.1\r\n") and f"Host: 127.0.0.1:{app.port}".encode() in head
    app.status = 503
    assert await probe_once(spec) == (False, f"GET :{app.port}/healthz answered 503")
    app.status = None
    assert await probe_once(spec) == (False, f"GET :{app.port}/healthz timed out after 0.3s")
    closed = ProbeSpec("http", free_port(), "/", timeout_s=0.3)
    ok, detail = await probe_once(closed)
    assert not ok and "failed" in detail and "refused" in detail.lower(), detail
    assert await probe_once(ProbeSpec("tcp", app.port)) == (True, f"TCP :{app.port} connected")


async def test_prober_reports_changes_with_the_thresholds(app: App) -> None:
    seen: list[tuple[str, bool]] = []
    changed = asyncio.Event()

    def on_result(t: ProbeTracker, did_change: bool) -> None:
        seen.append((t.state, did_change))
        if did_change:
            changed.set()

    prober = AppProber(
        ProbeSpec("http", app.port, "/h", period_s=0.05, timeout_s=0.2, failure_threshold=2), on_result
    )
    prober.start()
    try:
        await asyncio.wait_for(changed.wait(), 5)
        assert seen[-1] == (APP_HEALTHY, True)
        changed.clear()
        app.status = 500
        await asyncio.wait_for(changed.wait(), 5)
        assert (
            prober.tracker.state == APP_UNHEALTHY
            and "answered 500 (2 failure(s) in a row)" in prober.tracker.detail
        )
        assert [s for s, _ in seen[-2:]] == [APP_HEALTHY, APP_UNHEALTHY]  # one failure changed nothing
    finally:
        await prober.stop()
