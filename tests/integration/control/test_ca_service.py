"""meshbus-ca against a real nats-server: tokens, refusals with clear codes, renewal, replicas, bundle."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from meshbus.bus import BusConnection, codec, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import BadRequestError, BusError, PermissionDeniedError
from meshbus.bus.schemas.identity import (
    BundleReply,
    BundleRequest,
    CertifyRequest,
    CertifyResponse,
    TrustBundle,
)
from meshbus.bus.spiffe import load_pem_chain, verify_svid
from meshbus.control.ca.errors import (
    IdentityMismatchError,
    InvalidCsrError,
    RenewalRefusedError,
    TokenExhaustedError,
    TokenExpiredError,
    TokenInvalidError,
)
from meshbus.control.ca.service import CaServiceConfig
from meshbus.proxy.mesh.identity import make_csr, renewal_proof
from tests.integration.control.ca_helpers import DB, WEB, Clock, ca_replica, certify_with_token, create_token
from tests.unit.control.ca.pki import TD, csr_pem, root

pytestmark = pytest.mark.timeout(30)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_signs_a_csr_with_a_valid_token(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    ca_material = root()
    async with ca_replica(nats_server.url, bus.subjects.root, ca_material, probe=bus):
        token = await create_token(bus, uses=1)
        _key, resp = await certify_with_token(bus, token)
    chain = load_pem_chain(resp.cert_chain_pem)
    roots = load_pem_chain(resp.trust_bundle_pem)
    assert roots == [ca_material.root]
    assert verify_svid(chain[0], chain[1:], roots, trust_domain=TD, now=_now()) == WEB
    assert resp.spiffe_id == str(WEB)
    assert resp.expires_at == pytest.approx(time.time() + 86400, abs=30)
    assert resp.trust_bundle_version > 0


async def test_refusals_have_clear_codes(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    clock = Clock(time.time())
    async with ca_replica(nats_server.url, bus.subjects.root, root(), clock=clock, probe=bus):
        # wrong identity: a token for web cannot get db, and is not used up by trying
        token = await create_token(bus, "default", "web", uses=1)
        with pytest.raises(IdentityMismatchError) as info:
            await certify_with_token(bus, token, DB)
        assert info.value.code == "identity_mismatch"
        assert "bound to spiffe://cluster.local/ns/default/sa/web" in str(info.value)
        await certify_with_token(bus, token, WEB)
        # reused beyond its uses
        with pytest.raises(TokenExhaustedError) as exhausted:
            await certify_with_token(bus, token, WEB)
        assert exhausted.value.code == "token_exhausted"
        # expired
        short = await create_token(bus, uses=5, ttl=60)
        clock.now += 61
        with pytest.raises(TokenExpiredError, match="expired"):
            await certify_with_token(bus, short, WEB)
        # unknown / malformed
        with pytest.raises(TokenInvalidError):
            await certify_with_token(bus, "mbt1." + "0" * 26 + "." + "A" * 43, WEB)
        with pytest.raises(TokenInvalidError, match="malformed"):
            await certify_with_token(bus, "hello", WEB)
        # a CSR for another trust domain
        with pytest.raises(InvalidCsrError, match="outside this CA's trust domain"):
            key = ec.generate_private_key(ec.SECP256R1())
            req = CertifyRequest(csr_pem=csr_pem(key, "spiffe://evil.example/ns/default/sa/web"), token=token)
            await rpc.request(bus, bus.subjects.ca("certify"), req, CertifyResponse)
        # neither token nor certificate
        with pytest.raises(PermissionDeniedError, match="bootstrap token or the current certificate"):
            req = CertifyRequest(csr_pem=csr_pem(ec.generate_private_key(ec.SECP256R1()), WEB))
            await rpc.request(bus, bus.subjects.ca("certify"), req, CertifyResponse)
        with pytest.raises(BadRequestError, match="segment"):
            await create_token(bus, "bad/ns", "web")


async def test_sweep_removes_long_expired_tokens(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    clock = Clock(time.time())
    async with ca_replica(nats_server.url, bus.subjects.root, root(), clock=clock, probe=bus) as ca:
        old = await create_token(bus, uses=1, ttl=60)
        clock.now += 61 + 3600
        fresh = await create_token(bus, uses=1, ttl=60)
        assert await ca.sweep() == 1
        with pytest.raises(TokenInvalidError, match="unknown"):
            await certify_with_token(bus, old, WEB)
        await certify_with_token(bus, fresh, WEB)


async def test_renewal_with_the_current_certificate(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        token = await create_token(bus, uses=1)
        key, first = await certify_with_token(bus, token)
        new_key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(new_key, WEB)
        req = CertifyRequest(
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
            current_chain_pem=first.cert_chain_pem,
            proof=renewal_proof(key, csr),
        )
        renewed = await rpc.request(bus, bus.subjects.ca("certify"), req, CertifyResponse)
        assert renewed.serial != first.serial and renewed.spiffe_id == str(WEB)
        leaf = load_pem_chain(renewed.cert_chain_pem)[0]
        assert leaf.public_key().public_numbers() == new_key.public_key().public_numbers()  # type: ignore[union-attr]
        # a proof by someone else's key is refused
        forged = CertifyRequest(
            csr_pem=req.csr_pem,
            current_chain_pem=first.cert_chain_pem,
            proof=renewal_proof(ec.generate_private_key(ec.SECP256R1()), csr),
        )
        with pytest.raises(RenewalRefusedError) as info:
            await rpc.request(bus, bus.subjects.ca("certify"), forged, CertifyResponse)
        assert info.value.code == "renewal_refused"
        # the current certificate cannot be renewed into another identity
        other = make_csr(new_key, DB)
        switch = CertifyRequest(
            csr_pem=other.public_bytes(serialization.Encoding.PEM).decode(),
            current_chain_pem=first.cert_chain_pem,
            proof=renewal_proof(key, other),
        )
        with pytest.raises(IdentityMismatchError):
            await rpc.request(bus, bus.subjects.ca("certify"), switch, CertifyResponse)


async def test_two_replicas_share_token_use_counts(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    material = root()
    root_name = bus.subjects.root
    async with (
        ca_replica(nats_server.url, root_name, material, probe=bus) as a,
        ca_replica(nats_server.url, root_name, material, probe=bus) as b,
    ):
        token = await create_token(bus, uses=4)
        # alternate replicas directly: each sees the other's uses
        for replica in (a, b):
            key = ec.generate_private_key(ec.SECP256R1())
            await replica.certify(CertifyRequest(csr_pem=csr_pem(key, WEB), token=token))
        with pytest.raises(TokenExhaustedError, match="already used 4"):
            for replica in (b, a, b):
                key = ec.generate_private_key(ec.SECP256R1())
                await replica.certify(CertifyRequest(csr_pem=csr_pem(key, WEB), token=token))
        assert a.issued + b.issued == 4
        # concurrent requests over the bus: exactly `uses` of them win, whichever replica answers
        racing = await create_token(bus, uses=3)
        results = await asyncio.gather(
            *(certify_with_token(bus, racing, WEB) for _ in range(8)), return_exceptions=True
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BusError)]
        assert len(ok) == 3 and len(refused) == 5
        assert {e.code for e in refused} == {"token_exhausted"}
        assert a.issued + b.issued == 7


async def test_bundle_published_and_rotation_overlap(nats_server: EmbeddedNats, bus: BusConnection) -> None:
    old, new = root(), root()
    events: asyncio.Queue[TrustBundle] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        events.put_nowait(codec.decode(msg.data, msg.headers, TrustBundle))

    await bus.subscribe(bus.subjects.ca_bundle_changed(), on_event)
    await bus.flush()
    cfg = CaServiceConfig(root_overlap=dt.timedelta(hours=1))
    root_name = bus.subjects.root
    async with ca_replica(nats_server.url, root_name, old, config=cfg, probe=bus):
        first = await asyncio.wait_for(events.get(), 5)
        assert [r.active for r in first.roots] == [True]
        token = await create_token(bus, uses=1)
        old_key, old_cert = await certify_with_token(bus, token)
    # the operator switches to a new root: replicas restarted on it trust both for the overlap
    async with ca_replica(nats_server.url, root_name, new, config=cfg, probe=bus):
        second = await asyncio.wait_for(events.get(), 5)
        assert second.version > first.version
        pems = [load_pem_chain(r.cert_pem)[0] for r in second.roots]
        assert pems == [new.root, old.root]
        assert [r.active for r in second.roots] == [True, False]
        assert second.roots[1].trusted_until == pytest.approx(time.time() + 3600, abs=30)
        reply = await rpc.request(bus, bus.subjects.ca("bundle"), BundleRequest(), BundleReply)
        assert reply.bundle.version == second.version
        assert reply.bundle_pem.count("BEGIN CERTIFICATE") == 2
        # a proxy holding a certificate from the old root renews under the new one
        new_key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(new_key, WEB)
        renewed = await rpc.request(
            bus,
            bus.subjects.ca("certify"),
            CertifyRequest(
                csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
                current_chain_pem=old_cert.cert_chain_pem,
                proof=renewal_proof(old_key, csr),
            ),
            CertifyResponse,
        )
        chain = load_pem_chain(renewed.cert_chain_pem)
        assert verify_svid(chain[0], chain[1:], [new.root], trust_domain=TD, now=_now()) == WEB
        assert renewed.trust_bundle_pem.count("BEGIN CERTIFICATE") == 2
