"""Real TLS over loopback sockets between SVIDs issued by a running meshbus-ca.

Mutual auth succeeds with verified SPIFFE IDs on both sides; an expired certificate, a
certificate from another mesh and a wrong identity fail with their reason; a certificate
renewal changes what new connections see without dropping the open one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from meshbus.bus import BusConnection
from meshbus.bus.embedded import EmbeddedNats
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig, Identity
from meshbus.proxy.tls.contexts import (
    PeerPolicy,
    RotatingServerContext,
    TlsPeerError,
    build_client_context,
    describe_tls_error,
    peer_certificate,
    verify_peer,
)
from tests.integration.control.ca_helpers import DB, WEB, ca_replica, create_token
from tests.unit.control.ca.pki import NOW, TD, root, svid

pytestmark = pytest.mark.timeout(30)


@dataclass
class Inbound:
    """A tiny mTLS echo server: terminates TLS with start_tls so handshake errors reach us."""

    contexts: RotatingServerContext
    peers: list[str] = field(default_factory=list)
    failures: list[TlsPeerError] = field(default_factory=list)
    failed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(self.contexts.current)
            self.peers.append(str(verify_peer(writer.get_extra_info("ssl_object"), PeerPolicy(TD))))
            while line := await reader.readline():
                writer.write(b"echo " + line)
                await writer.drain()
        except (ssl.SSLError, TlsPeerError, ConnectionError) as exc:
            self.failures.append(describe_tls_error(exc))
            self.failed.set()
        finally:
            writer.close()


@asynccontextmanager
async def serve(inbound: Inbound) -> AsyncIterator[int]:
    server = await asyncio.start_server(inbound.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def call(port: int, ctx: ssl.SSLContext, expect: str = str(DB)) -> tuple[str, int]:
    """Connect, verify the server is ``expect``, send one line; returns (reply, server serial)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="")
    try:
        so = writer.get_extra_info("ssl_object")
        verify_peer(so, PeerPolicy.expect(TD, expect))
        writer.write(b"hello\n")
        await writer.drain()
        return (await reader.readline()).decode(), peer_certificate(so).serial_number  # type: ignore[union-attr]
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


async def refused(port: int, ctx: ssl.SSLContext) -> str:
    """How a client whose certificate the server refuses sees it. Under TLS 1.3 the client's
    handshake completes first; the server's alert then surfaces as an SSLError or as EOF."""
    try:
        reply, _serial = await call(port, ctx)
    except (ssl.SSLError, ConnectionError) as exc:
        return describe_tls_error(exc).reason
    assert reply == ""
    return "closed"


async def _identity(bus: BusConnection, sa: str, **cfg: object) -> CertClient:
    token = await create_token(bus, "default", sa, uses=1)
    client = CertClient(bus, CertClientConfig(WEB if sa == "web" else DB, token=token, **cfg))  # type: ignore[arg-type]
    await client.start()
    return client


async def test_mutual_tls_with_issued_svids(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        server_id, client_id = await _identity(bus, "db"), await _identity(bus, "web")
    try:
        assert server_id.current is not None and client_id.current is not None
        inbound = Inbound(RotatingServerContext(server_id.current.server_context))
        async with serve(inbound) as port:
            reply, _serial = await call(port, client_id.current.client_context)
            assert reply == "echo hello\n"
            assert inbound.peers == [str(WEB)]
            # the client expects reviews, but db answers: wrong identity, with the reason
            with pytest.raises(TlsPeerError) as info:
                await call(
                    port,
                    client_id.current.client_context,
                    expect="spiffe://cluster.local/ns/default/sa/reviews",
                )
            assert info.value.reason == "wrong_identity"
            assert "peer identity is spiffe://cluster.local/ns/default/sa/db" in str(info.value)
    finally:
        await server_id.stop()
        await client_id.stop()


async def test_expired_and_foreign_certificates_fail_with_reasons(
    nats_server: EmbeddedNats, bus: BusConnection
) -> None:
    ca = root()
    async with ca_replica(nats_server.url, bus.subjects.root, ca, probe=bus):
        server_id = await _identity(bus, "db")
    try:
        assert server_id.current is not None
        inbound = Inbound(RotatingServerContext(server_id.current.server_context))
        async with serve(inbound) as port:
            expired, _ = svid(ca, "default", "web", now=NOW - dt.timedelta(days=3))
            assert await refused(port, build_client_context(expired)) in ("peer_rejected_expired", "closed")
            await asyncio.wait_for(inbound.failed.wait(), 5)
            assert inbound.failures[-1].reason == "expired"
            assert "has expired" in str(inbound.failures[-1])

            inbound.failed.clear()
            foreign, _ = svid(root("other.example"), "default", "web", td="other.example", bundle=ca.root_pem)
            assert await refused(port, build_client_context(foreign)) in ("peer_rejected_untrusted", "closed")
            await asyncio.wait_for(inbound.failed.wait(), 5)
            assert inbound.failures[-1].reason == "untrusted"
            assert "trust bundle" in str(inbound.failures[-1])
            assert inbound.peers == []
    finally:
        await server_id.stop()


async def test_renewal_swaps_certificate_without_dropping_connections(
    nats_server: EmbeddedNats, bus: BusConnection
) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        server_id, client_id = await _identity(bus, "db"), await _identity(bus, "web")
        try:
            assert server_id.current is not None and client_id.current is not None
            inbound = Inbound(RotatingServerContext(server_id.current.server_context))
            server_id.add_rotation_callback(lambda ident: inbound.contexts.update(ident.server_context))
            first: Identity = server_id.current
            async with serve(inbound) as port:
                # a long-lived connection opened before the renewal
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_id.current.client_context, server_hostname=""
                )
                writer.write(b"one\n")
                assert await reader.readline() == b"echo one\n"
                renewed = await server_id.renew_now()
                assert renewed.serial_hex != first.serial_hex
                _reply, serial = await call(port, client_id.current.client_context)
                assert serial == renewed.leaf.serial_number  # new connections see the new certificate
                writer.write(b"two\n")  # the old one still works, on the old certificate
                assert await reader.readline() == b"echo two\n"
                old_serial = peer_certificate(writer.get_extra_info("ssl_object")).serial_number  # type: ignore[union-attr]
                assert old_serial == first.leaf.serial_number
                writer.close()
                await writer.wait_closed()
        finally:
            await server_id.stop()
            await client_id.stop()
