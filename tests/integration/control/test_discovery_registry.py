"""Endpoints follow the registry: a silent workload leaves within the expiry, a draining one at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from meshbus.bus.embedded import EmbeddedNats

from .discovery_helpers import Mesh, dr, vs, wait_status, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def mesh(nats_server: EmbeddedNats, subject_root: str) -> AsyncIterator[Mesh]:
    m = await Mesh(nats_server.url, subject_root).start()
    await m.put(dr())
    await m.put(vs(100))
    await m.discovery()
    try:
        yield m
    finally:
        await m.close()


async def test_a_workload_that_stops_heartbeating_leaves_every_endpoint_set(mesh: Mesh) -> None:
    pp, other, r1, r2 = await asyncio.gather(
        mesh.sim("productpage"), mesh.sim("ratings"), mesh.sim("reviews", "v1"), mesh.sim("reviews", "v2")
    )
    addresses = sorted([r1.agent.workload.address, r2.agent.workload.address])
    await wait_until(lambda: pp.endpoints("reviews") == addresses and other.endpoints("reviews") == addresses)
    # Crash: heartbeats stop, nothing says goodbye.
    await r2.agent.stop(deregister=False)
    mesh.sims.remove(r2)
    stopped = time.monotonic()
    alive = [r1.agent.workload.address]
    await wait_until(
        lambda: pp.endpoints("reviews") == alive and other.endpoints("reviews") == alive, timeout=5
    )
    took = time.monotonic() - stopped
    assert took < mesh.settings.expiry + 1.0, f"endpoint removed after {took:.2f}s"
    st = await mesh.status()
    assert r2.node not in st and r1.node in st


async def test_a_draining_proxy_deregisters_at_once(mesh: Mesh) -> None:
    pp, r1, r2 = await asyncio.gather(
        mesh.sim("productpage"), mesh.sim("reviews", "v1"), mesh.sim("reviews", "v2")
    )
    await wait_until(lambda: len(pp.endpoints("reviews")) == 2)
    started = time.monotonic()
    await r1.agent.drain()
    await wait_until(lambda: pp.endpoints("reviews") == [r2.agent.workload.address], timeout=2)
    assert time.monotonic() - started < 0.5  # far below the expiry: no waiting for silence
    await wait_status(mesh, lambda st: r1.node not in st and st[pp.node].status == "SYNCED")


async def test_an_endpoint_appears_when_a_workload_registers(mesh: Mesh) -> None:
    pp = await mesh.sim("productpage")
    assert pp.endpoints("reviews") == [] and pp.weights() == []  # reviews is not there yet
    r1 = await mesh.sim("reviews", "v1")
    await wait_until(lambda: pp.endpoints("reviews") == [r1.agent.workload.address])
    await wait_until(lambda: pp.weights() == [100.0], what="the held-back route goes out")
