"""A malformed message on any subject does not crash a component: meshbus-config, -discovery and -ca,
and a proxy's agent and certificate client, get garbage (tests/fuzz/garbage.py) on every subject they
listen to, then still do their work — and none of their message handlers raised (nats-py hands a
handler's exception to the connection's error callback, which counts it)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from meshbus.bus import BusConnection, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas import Health, HealthRequest
from meshbus.bus.schemas.config import ApplyRequest
from meshbus.bus.schemas.discovery import (
    Deregister,
    FetchRequest,
    Heartbeat,
    ProxyConfigRequest,
    ProxyStatusRequest,
    Register,
    RegistryHostsRequest,
    ReplicaBeat,
    Snapshot,
    SnapshotAck,
)
from meshbus.bus.schemas.identity import (
    BundleRequest,
    CertifyRequest,
    TokenCreateRequest,
    TrustBundle,
    TrustRoot,
)
from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca.issuer import generate_root
from meshbus.control.config.service import ConfigService
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig
from tests.fuzz.garbage import garbage
from tests.support.bounded import within

from .ca_helpers import ca_replica
from .discovery_helpers import Mesh, dr, vs, wait_until

pytestmark = pytest.mark.timeout(60)


async def _spray(
    bus: BusConnection, subject: str, cls: type[Any], rng: random.Random, *, request: bool
) -> None:
    for data, headers in garbage(cls, rng):
        if request:  # a service answers each (an error, or a reply when the request has no fields)
            reply = await bus.nc.request(subject, data, headers=headers, timeout=5)
            assert reply.headers and (rpc.ERROR_CODE_HEADER in reply.headers or not cls.__dataclass_fields__)
        else:
            await bus.nc.publish(subject, data, headers=headers)
    await bus.flush()


async def test_garbage_on_every_subject_crashes_nothing(nats_server: EmbeddedNats, subject_root: str) -> None:
    rng = random.Random(16)
    mesh = await Mesh(nats_server.url, subject_root).start()
    try:
        await mesh.put(dr())
        await mesh.put(vs(100))
        disco = await mesh.discovery()
        sim = await mesh.sim("reviews")
        await wait_until(lambda: sim.version > 0, what="the first snapshot")
        config_bus = await mesh.connect("config")
        async with (
            ConfigService(config_bus),
            ca_replica(
                nats_server.url, subject_root, generate_root("cluster.local", dt.datetime.now(dt.UTC))
            ) as ca,
        ):
            s, ops, node = mesh.ops.subjects, mesh.ops, sim.node
            token = await ca.create_token(TokenCreateRequest("default", "reviews"))
            certs_bus = await mesh.connect("cert-client")
            client = CertClient(
                certs_bus,
                CertClientConfig(SpiffeId.workload("cluster.local", "default", "reviews"), token.token),
            )
            await client.start()
            for subject, cls in [
                (s.xds_heartbeat(node), Heartbeat),
                (s.xds_ack(node), SnapshotAck),
                (s.xds_deregister("ghost"), Deregister),
                (s.xds_replica(), ReplicaBeat),
                (s.xds_snapshot(node), Snapshot),
                (s.ca_bundle_changed(), TrustBundle),
            ]:
                await _spray(ops, subject, cls, rng, request=False)
            # well-formed, past every check the handlers make first, with roots that are not certificates
            for pem in ("", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "x" * 10000):
                bad = TrustBundle("cluster.local", (TrustRoot(pem, 4e9, True),), version=2**62)
                await ops.publish(s.ca_bundle_changed(), bad)
            for subject, cls in [
                (s.xds_register(node), Register),
                (s.xds_fetch(node), FetchRequest),
                (s.xds_hosts(), RegistryHostsRequest),
                (s.config("apply"), ApplyRequest),
                (s.ca("certify"), CertifyRequest),
                (s.ca("token"), TokenCreateRequest),
                (s.ca("bundle"), BundleRequest),
            ]:
                await _spray(ops, subject, cls, rng, request=True)
            for subject, cls in [
                (s.xds_status(), ProxyStatusRequest),
                (s.xds_config_dump(node), ProxyConfigRequest),
            ]:
                for data, headers in garbage(cls, rng, 10):  # answered or ignored, never a crash
                    await ops.nc.publish(subject, data, reply=ops.nc.new_inbox(), headers=headers)
            await ops.flush()

            # everyone still works
            before = sim.version
            await mesh.put(vs(50))
            await wait_until(lambda: sim.version > before, what="a snapshot after the garbage")
            assert (await mesh.status())[node].row.node == node
            for component in ("config", "ca", "discovery"):
                health = await rpc.request(ops, s.endpoint(component, "health"), HealthRequest(), Health)
                assert health.ready, component
            assert ca.bundle.roots
            assert (
                client.current is not None and client.current.bundle_pem
            )  # the garbage bundles changed nothing
            await client.renew_now()
            await client.stop()
            for bus in (config_bus, ca.bus, *mesh.buses):
                assert bus.stats.async_errors == 0, (
                    f"{bus.settings.name}: a handler raised ({bus.last_error!r})"
                )
        assert disco.stats.errors > 0  # the garbage was heard, and counted
    finally:
        await within("the mesh to stop", mesh.close())
