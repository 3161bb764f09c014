"""The proxy's CertClient against a real meshbus-ca: bootstrap, renewal by certificate, bundle updates."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from meshbus.bus import BusConnection
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import PermissionDeniedError
from meshbus.control.ca.errors import TokenExhaustedError
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig, Identity, resolve_token
from tests.integration.control.ca_helpers import WEB, ca_replica, create_token
from tests.unit.control.ca.pki import root

pytestmark = pytest.mark.timeout(30)


class Rotations:
    def __init__(self) -> None:
        self.seen: list[Identity] = []
        self.changed = asyncio.Event()

    def __call__(self, ident: Identity) -> None:
        self.seen.append(ident)
        self.changed.set()

    async def next(self, timeout: float = 10) -> Identity:
        await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()
        return self.seen[-1]


async def test_bootstrap_then_renew_by_certificate(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        token = await create_token(bus, uses=1)  # one use: renewals must go by certificate
        client = CertClient(bus, CertClientConfig(WEB, token=token, node="sidecar-1"))
        rotations = Rotations()
        client.add_rotation_callback(rotations)
        try:
            first = await client.start()
            assert client.ready and client.current is first
            assert rotations.seen == [first]
            assert first.spiffe_id == WEB and first.leaf.not_valid_after_utc > dt.datetime.now(dt.UTC)
            # renewal at half life (24h cert -> 12h, ± 1% of the lifetime)
            assert client.next_renewal_at - first.issued_at == pytest.approx(43200, abs=865)
            second = await client.renew_now()
            assert second.serial_hex != first.serial_hex
            assert second.key is not first.key  # a fresh key per certificate
            assert second.server_context is not first.server_context
            assert client.current is second and rotations.seen[-1] is second
            assert client.renewals == 1
        finally:
            await client.stop()


async def test_short_lived_certificates_renew_on_their_own(
    nats_server: EmbeddedNats, bus: BusConnection
) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        token = await create_token(bus, uses=1)
        client = CertClient(bus, CertClientConfig(WEB, token=token, ttl_s=2))
        rotations = Rotations()
        client.add_rotation_callback(rotations)
        try:
            first = await client.start()
            await rotations.next()
            renewed = await rotations.next(timeout=5)  # ~1 s: half of the 2 s life
            assert renewed.serial_hex != first.serial_hex
            half = (first.not_after - first.issued_at) * 0.49  # notAfter has 1 s precision
            assert half <= renewed.issued_at - first.issued_at < first.not_after - first.issued_at
            again = await rotations.next(timeout=5)
            assert again.serial_hex != renewed.serial_hex
        finally:
            await client.stop()


async def test_refused_token_fails_start_with_the_reason(
    nats_server: EmbeddedNats, bus: BusConnection
) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        token = await create_token(bus, uses=1)
        used = CertClient(bus, CertClientConfig(WEB, token=token))
        await used.start()
        await used.stop()
        again = CertClient(bus, CertClientConfig(WEB, token=token))
        with pytest.raises(TokenExhaustedError, match="already used 1"):
            await again.start()
        await again.stop()


async def test_bundle_update_rebuilds_contexts(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    old, new = root(), root()
    root_name = bus.subjects.root
    async with ca_replica(nats_server.url, root_name, old, probe=bus):
        token = await create_token(bus, uses=1)
        client = CertClient(bus, CertClientConfig(WEB, token=token))
        rotations = Rotations()
        client.add_rotation_callback(rotations)
        first = await client.start()
        await rotations.next()
    try:
        async with ca_replica(nats_server.url, root_name, new, probe=bus):  # root rotation: the bundle grows
            updated = await rotations.next()
            assert updated.bundle_version > first.bundle_version
            assert updated.bundle_pem.count(b"BEGIN CERTIFICATE") == 2
            assert updated.serial_hex == first.serial_hex  # same certificate, new roots
            assert updated.client_context is not first.client_context
            renewed = await client.renew_now()  # the old-root certificate still renews
            assert renewed.leaf.issuer == new.root.subject
    finally:
        await client.stop()


def test_token_comes_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHBUS_TOKEN", " from-env \n")
    assert resolve_token(None) == "from-env"
    assert resolve_token("from-flag") == "from-flag"
    monkeypatch.delenv("MESHBUS_TOKEN")
    assert resolve_token(None) == ""


async def test_missing_token_is_a_clear_start_error(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        client = CertClient(bus, CertClientConfig(WEB, token=""))
        with pytest.raises(PermissionDeniedError, match="MESHBUS_TOKEN"):
            await client.start()
        await client.stop()
