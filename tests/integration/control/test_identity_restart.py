"""A proxy's identity across restarts, against a real meshbus-ca: the kept certificate renews without a
token; an expired one needs a new token and says so; another identity's certificate renews nothing."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshbus.bus import BusConnection, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import PermissionDeniedError
from meshbus.bus.schemas.identity import CertifyRequest, CertifyResponse
from meshbus.control.ca.errors import IdentityMismatchError, RenewalRefusedError, TokenExhaustedError
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig, make_csr, renewal_proof
from meshbus.proxy.mesh.state_dir import BUNDLE_FILE, IDENTITY_FILE, load_identity
from tests.integration.control.ca_helpers import DB, WEB, Clock, ca_replica, certify_with_token, create_token
from tests.integration.control.test_ca_cert_client import Rotations
from tests.unit.control.ca.pki import root

pytestmark = pytest.mark.timeout(30)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_restart_renews_with_the_kept_certificate(
    nats_server: EmbeddedNats, bus: BusConnection, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        token = await create_token(bus, uses=1)
        first = CertClient(bus, CertClientConfig(WEB, token=token, state_dir=str(state)))
        try:
            issued = await first.start()
        finally:
            await first.stop()
        assert _mode(state) == 0o700
        assert _mode(state / IDENTITY_FILE) == 0o600 and _mode(state / BUNDLE_FILE) == 0o600
        assert not [p.name for p in state.iterdir() if p.name.endswith(".tmp")]

        serials = [issued.serial_hex]
        for _restart in range(2):  # the token is used up: each restart goes by the kept certificate
            client = CertClient(bus, CertClientConfig(WEB, token=token, state_dir=str(state)))
            rotations = Rotations()
            client.add_rotation_callback(rotations)
            try:
                restored = await client.start()
                assert restored.serial_hex == serials[-1]  # serving at once with what it kept
                renewed = await rotations.next()  # ... and renewed with it right away
                if renewed is restored:
                    renewed = await rotations.next()
                assert renewed.serial_hex not in serials and client.renewals == 1
                assert client.failures == 0, client.last_error
                kept = load_identity(state)
                assert kept is not None and f"{kept.leaf.serial_number:x}" == renewed.serial_hex
                serials.append(renewed.serial_hex)
            finally:
                await client.stop()


async def test_expired_kept_certificate_with_a_used_token_says_a_new_token_is_needed(
    nats_server: EmbeddedNats, bus: BusConnection, tmp_path: Path
) -> None:
    state = str(tmp_path / "state")
    clock = Clock(time.time() - 2 * 86400)  # the first certificate is two days old
    async with ca_replica(nats_server.url, bus.subjects.root, root(), clock=clock, probe=bus):
        token = await create_token(bus, uses=1, ttl=3 * 86400)
        first = CertClient(bus, CertClientConfig(WEB, token=token, state_dir=state), clock=clock)
        try:
            issued = await first.start()
        finally:
            await first.stop()
        clock.now = time.time()
        assert issued.not_after < clock.now
        client = CertClient(bus, CertClientConfig(WEB, token=token, state_dir=state))
        with pytest.raises(TokenExhaustedError) as info:
            await client.start()
        text = str(info.value)
        assert "already used 1 time(s)" in text
        assert f"the certificate kept in {state}/identity.pem expired at" in text
        assert "needs a new bootstrap token: meshctl token create -n default --service-account web" in text
        # no token at all: the same advice, without asking the CA
        bare = CertClient(bus, CertClientConfig(WEB, state_dir=state))
        with pytest.raises(PermissionDeniedError, match="needs a new bootstrap token") as no_token:
            await bare.start()
        assert no_token.value.code == "permission_denied"
        # a fresh token gets a new certificate, kept in place of the expired one
        again = CertClient(bus, CertClientConfig(WEB, token=await create_token(bus), state_dir=state))
        try:
            renewed = await again.start()
        finally:
            await again.stop()
        kept = load_identity(state)
        assert renewed.serial_hex != issued.serial_hex
        assert kept is not None and f"{kept.leaf.serial_number:x}" == renewed.serial_hex


async def test_another_identitys_certificate_cannot_renew_this_one(
    nats_server: EmbeddedNats, bus: BusConnection, tmp_path: Path
) -> None:
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        db_key, db = await certify_with_token(bus, await create_token(bus, "default", "db"), DB)
        _web_key, web = await certify_with_token(bus, await create_token(bus, "default", "web"), WEB)
        new_key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(new_key, WEB)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        certify = bus.subjects.ca("certify")
        # db's valid certificate and its own key, asking for web
        own = CertifyRequest(
            csr_pem=csr_pem, current_chain_pem=db.cert_chain_pem, proof=renewal_proof(db_key, csr)
        )
        with pytest.raises(
            IdentityMismatchError, match=r"current certificate is .*/sa/db, but the CSR asks for"
        ):
            await rpc.request(bus, certify, own, CertifyResponse)
        # web's certificate (public: any peer sees it in a handshake) with a proof by db's key
        borrowed = CertifyRequest(
            csr_pem=csr_pem, current_chain_pem=web.cert_chain_pem, proof=renewal_proof(db_key, csr)
        )
        with pytest.raises(RenewalRefusedError, match="does not verify with the current certificate's key"):
            await rpc.request(bus, certify, borrowed, CertifyResponse)

        # a proxy for web whose state directory holds db's identity does not use it
        state = tmp_path / "state"
        planted = CertClient(bus, CertClientConfig(DB, token=await create_token(bus, "default", "db"),
                                                   state_dir=str(state)))  # fmt: skip
        try:
            await planted.start()
        finally:
            await planted.stop()
        client = CertClient(bus, CertClientConfig(WEB, state_dir=str(state)))
        with pytest.raises(
            PermissionDeniedError, match=r"no bootstrap token for spiffe://cluster\.local/ns/default/sa/web"
        ):
            await client.start()
        assert client.current is None


async def test_kept_key_readable_by_others_is_closed_and_replaced(
    nats_server: EmbeddedNats, bus: BusConnection, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        first = CertClient(bus, CertClientConfig(WEB, token=await create_token(bus), state_dir=str(state)))
        try:
            issued = await first.start()
        finally:
            await first.stop()
        (state / IDENTITY_FILE).chmod(0o644)
        client = CertClient(bus, CertClientConfig(WEB, state_dir=str(state)))
        rotations = Rotations()
        client.add_rotation_callback(rotations)
        try:
            await client.start()
            assert _mode(state / IDENTITY_FILE) == 0o600
            while client.renewals == 0:
                await rotations.next()
            assert client.current is not None and client.current.serial_hex != issued.serial_hex
            kept = load_identity(state)
            assert kept is not None and kept.key.private_numbers() != issued.key.private_numbers()
        finally:
            await client.stop()


async def test_kept_certificate_without_its_bundle_renews_before_serving(
    nats_server: EmbeddedNats, bus: BusConnection, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    async with ca_replica(nats_server.url, bus.subjects.root, root(), probe=bus):
        first = CertClient(bus, CertClientConfig(WEB, token=await create_token(bus), state_dir=str(state)))
        try:
            issued = await first.start()
        finally:
            await first.stop()
        (state / BUNDLE_FILE).unlink()  # cannot verify peers with it: ask the CA first, by certificate
        client = CertClient(bus, CertClientConfig(WEB, state_dir=str(state)))
        try:
            ident = await client.start()
            assert ident.serial_hex != issued.serial_hex and ident.bundle_pem
            assert (state / BUNDLE_FILE).read_bytes() == ident.bundle_pem
        finally:
            await client.stop()
