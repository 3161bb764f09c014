"""A mesh-mode proxy answers ``xds_certs(<node>)`` with the certificate it holds, over a real NATS and
a real meshbus-ca replica: waiting before its certificate, then the SVID, then the renewed one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from meshbus.bus import BusConnection, BusSettings, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.identity import (
    CERT_ACTIVE,
    CERT_NO_IDENTITY,
    CERT_WAITING,
    ProxyCertsReply,
    ProxyCertsRequest,
)
from meshbus.proxy.filters.observe import Observability
from meshbus.proxy.mesh.agent import AgentSettings
from meshbus.proxy.mesh.mode import IdentitySettings, MeshMode
from meshbus.telemetry.metrics import InternalMetrics, IstioMetrics, Registry
from tests.integration.control.ca_helpers import ca_replica, create_token
from tests.unit.control.ca.pki import root

pytestmark = pytest.mark.timeout(30)

REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"


def _server() -> Any:
    """What MeshMode needs of a ProxyServer (no listeners: the routes are not under test here)."""
    registry = Registry()
    internal = InternalMetrics(registry)
    return SimpleNamespace(
        apply=lambda runtime: None, drain_hooks=[], not_ready="", cert_report=None, runtime=None,
        registry=registry, internal=internal,
        observe=Observability(IstioMetrics(registry), internal, "default", {}),
        add_access_log_sink=lambda sink, fmt="json": None,
    )  # fmt: skip


def _mesh(url: str, root_: str, node: str, identity: IdentitySettings | None) -> MeshMode:
    settings = AgentSettings(service="reviews", service_account="reviews", node_id=node, fetch_timeout=0.2)
    return MeshMode(_server(), BusSettings(url=url, name=node, root=root_), settings, identity)


async def _ask(bus: BusConnection, node: str) -> ProxyCertsReply:
    # the proxy subscribes once its own connection is up: until then nobody answers
    async with asyncio.timeout(10):
        while True:
            try:
                return await rpc.request(
                    bus, bus.subjects.xds_certs(node), ProxyCertsRequest(), ProxyCertsReply
                )
            except UnavailableError:
                await asyncio.sleep(0.02)


async def test_report_follows_the_certificate(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        token = await create_token(bus, "default", "reviews")
        mesh = _mesh(nats_server.url, bus.subjects.root, "reviews-1", IdentitySettings(token))
        mesh.start()
        try:
            waiting = await _ask(bus, "reviews-1")  # no snapshot yet, so no certificate requested yet
            assert (waiting.state, waiting.spiffe_id, waiting.certificate) == (CERT_WAITING, REVIEWS, None)
            mesh.agent.ready.set()  # stands in for the first snapshot (no discovery in this test)
            await asyncio.wait_for(mesh.ready.wait(), 10)

            first = await _ask(bus, "reviews-1")
            assert first.state == CERT_ACTIVE and first.certificate is not None
            info = first.certificate
            assert info.spiffe_id == REVIEWS and info.bundle_roots == 1 and info.renewals == 0
            assert info.not_before < info.renewal_at < info.not_after
            assert mesh.server.cert_report() == first  # the admin's /certs reads the same report

            assert mesh.cert_client is not None
            await mesh.cert_client.renew_now()
            second = await _ask(bus, "reviews-1")
            assert second.certificate is not None
            assert second.certificate.serial != info.serial and second.certificate.renewals == 1
            renewal_at = second.certificate.renewal_at  # rescheduled from the new certificate
            assert renewal_at == mesh.cert_client.next_renewal_at
            assert second.certificate.not_before < renewal_at < second.certificate.not_after
        finally:
            await mesh.stop()
        with pytest.raises(UnavailableError):  # stopped: nobody answers for it any more
            await rpc.request(bus, bus.subjects.xds_certs("reviews-1"), ProxyCertsRequest(), ProxyCertsReply)


async def test_proxy_without_identity_says_so(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    mesh = _mesh(nats_server.url, bus.subjects.root, "plain-1", None)
    mesh.start()
    try:
        reply = await _ask(bus, "plain-1")
        assert reply == ProxyCertsReply(node="plain-1", state=CERT_NO_IDENTITY)
    finally:
        await mesh.stop()
