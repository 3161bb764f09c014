"""Discovery signs every snapshot; an agent that knows the key applies only signed ones; discovery
takes a proxy's word only for the node its subject names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from meshbus.bus import rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import PermissionDeniedError
from meshbus.bus.schemas.discovery import FetchRequest, Heartbeat, Register, Snapshot
from meshbus.bus.signing import Signer, generate_key_pem
from meshbus.proxy.mesh.snapshot_trust import SnapshotTrust

from .discovery_helpers import Mesh, dr, vs, wait_until

pytestmark = pytest.mark.timeout(30)


def _signer() -> Signer:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(generate_key_pem(), None)
    return Signer(key)  # type: ignore[arg-type]


@pytest.fixture
async def mesh(nats_server: EmbeddedNats, subject_root: str) -> AsyncIterator[Mesh]:
    m = await Mesh(nats_server.url, subject_root).start()
    await m.put(dr())
    await m.put(vs(100))
    try:
        yield m
    finally:
        await m.close()


async def test_signed_snapshots_are_applied_pushes_included(mesh: Mesh) -> None:
    signer = _signer()
    await mesh.discovery(signer=signer)
    trust = SnapshotTrust()
    trust.set_keys([signer.public_text])
    sim = await mesh.sim("reviews", trust=trust)
    await wait_until(lambda: sim.version > 0, what="the first (fetched, signed) snapshot")
    first = sim.version
    await mesh.put(vs(50))  # a push
    await wait_until(lambda: sim.version > first, what="the pushed snapshot")
    assert trust.refused == 0


async def test_an_agent_that_knows_a_key_refuses_unsigned_snapshots(mesh: Mesh) -> None:
    await mesh.discovery()  # no signing key
    trust = SnapshotTrust()
    trust.set_keys([_signer().public_text])
    sim = await mesh.sim("reviews", trust=trust, start=False)
    await sim.agent.start()
    await wait_until(lambda: trust.refused >= 1, what="a refused snapshot")
    assert sim.version == 0 and not sim.agent.ready.is_set()
    assert "not signed" in trust.last_refusal


async def test_a_proxy_speaks_only_for_the_node_its_subject_names(mesh: Mesh) -> None:
    d = await mesh.discovery()
    await wait_until(lambda: d.ready, what="discovery warm")
    other = Register(node_id="victim", service="reviews", labels={"version": "v1"})
    with pytest.raises(PermissionDeniedError, match="victim"):
        await rpc.request(mesh.ops, mesh.ops.subjects.xds_fetch("attacker"), FetchRequest(other), Snapshot)
    with pytest.raises(PermissionDeniedError):
        await rpc.request(mesh.ops, mesh.ops.subjects.xds_register("attacker"), other, Snapshot)
    await mesh.ops.publish(mesh.ops.subjects.xds_heartbeat("attacker"), Heartbeat(other))
    await wait_until(lambda: d.stats.errors >= 1, what="the heartbeat refused")
    assert d.registry.get("victim") is None
