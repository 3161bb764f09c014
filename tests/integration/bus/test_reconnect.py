"""nats-server killed under a running service: it survives, reconnects, answers again."""

from __future__ import annotations

import asyncio

import pytest

from meshbus.bus import BusConnection, BusSettings, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import BusError
from tests.integration.bus.test_service import EchoReply, EchoRequest, echo_service

pytestmark = pytest.mark.timeout(40)


async def _wait_for_event(flag: asyncio.Event, timeout: float = 15) -> None:
    await asyncio.wait_for(flag.wait(), timeout)


async def test_service_survives_server_restart(private_nats: EmbeddedNats) -> None:
    settings = BusSettings(url=private_nats.url, root="reconnect", reconnect_max=0.2)
    server_side = BusConnection(settings)
    client = BusConnection(settings)
    await server_side.connect()
    await client.connect()
    reconnected = asyncio.Event()
    original = server_side._on_reconnected

    async def on_reconnected() -> None:
        await original()
        reconnected.set()

    server_side.nc._reconnected_cb = on_reconnected
    try:
        async with echo_service(server_side):
            subject = client.subjects.endpoint("echo", "echo")
            assert (await rpc.request(client, subject, EchoRequest("before"), EchoReply)).text == "BEFORE"

            await asyncio.to_thread(private_nats.kill)
            with pytest.raises(BusError):
                await rpc.request(client, subject, EchoRequest("during"), EchoReply, timeout=0.5)

            await asyncio.to_thread(private_nats.start)
            await _wait_for_event(reconnected)
            await client.wait_connected(timeout=15)
            await server_side.flush()
            reply = await rpc.request(client, subject, EchoRequest("after"), EchoReply, timeout=5)
            assert reply.text == "AFTER"
            assert server_side.stats.disconnects == 1
            assert server_side.stats.reconnects == 1
    finally:
        await client.close()
        await server_side.close()


async def test_initial_connect_waits_for_a_late_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedNats(port=0, store_dir=str(tmp_path / "js"))
    await asyncio.to_thread(server.start)
    url = server.url
    await asyncio.to_thread(server.stop)  # the port is now known and free
    conn = BusConnection(BusSettings(url=url, reconnect_max=0.2))
    connecting = asyncio.create_task(conn.connect())
    try:
        await asyncio.sleep(0)  # let the first attempt fail against the stopped server
        assert not connecting.done()
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(connecting, 15)
        assert conn.connected
    finally:
        connecting.cancel()
        await conn.close()
        await asyncio.to_thread(server.cleanup)
