"""mTLS building blocks without sockets: handshakes between in-memory BIO pairs.

Covers context construction (TLS >= 1.2, ALPN http/1.1, mutual auth), the SPIFFE peer checks
with their reasons (expired, wrong trust domain, wrong identity, untrusted), the error
descriptions, context rotation through the servername callback, and the renewal schedule.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshbus.bus.spiffe import SpiffeId
from meshbus.proxy.mesh.identity import make_csr, make_key, renewal_delay
from meshbus.proxy.tls.contexts import (
    PeerPolicy,
    RotatingServerContext,
    TlsMaterial,
    TlsPeerError,
    _load_cert_chain,
    build_client_context,
    build_server_context,
    describe_tls_error,
    peer_certificate,
    peer_spiffe_id,
    verify_peer,
    verify_peer_certificate,
)
from tests.unit.control.ca.pki import NOW, TD, intermediate, root, svid

WEB = "spiffe://cluster.local/ns/default/sa/web"
DB = "spiffe://cluster.local/ns/default/sa/db"


@dataclass
class Pair:
    server: ssl.SSLObject
    client: ssl.SSLObject
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    done: set[str] = field(default_factory=set)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Pair:
    """Pump bytes between two SSLObjects until both finish or fail (TLS 1.3: the server may
    refuse the client's certificate after the client thinks it is done: a read surfaces it)."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    pair = Pair(server_ctx.wrap_bio(s_in, s_out, server_side=True), client_ctx.wrap_bio(c_in, c_out))
    for _ in range(20):
        for name, obj in (("client", pair.client), ("server", pair.server)):
            if name in pair.done or getattr(pair, f"{name}_error") is not None:
                continue
            try:
                obj.do_handshake()
                pair.done.add(name)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                setattr(pair, f"{name}_error", exc)
        c_in.write(s_out.read())
        s_in.write(c_out.read())
    if "client" in pair.done and pair.client_error is None:
        try:
            pair.client.read(1)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            pair.client_error = exc
    return pair


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    return root()


def _ctxs(ca, server_sa="db", client_sa="web", **client_kw):  # type: ignore[no-untyped-def]
    srv, _ = svid(ca, "default", server_sa)
    cli, _ = svid(ca, "default", client_sa, **client_kw)
    return build_server_context(srv), build_client_context(cli)


def test_mutual_auth_succeeds_and_both_sides_see_spiffe_ids(ca) -> None:  # type: ignore[no-untyped-def]
    s, c = _ctxs(ca)
    p = handshake(s, c)
    assert p.done == {"client", "server"} and p.server_error is None and p.client_error is None
    assert verify_peer(p.client, PeerPolicy.expect(TD, DB)) == SpiffeId.parse(DB)
    assert verify_peer(p.server, PeerPolicy(TD)) == SpiffeId.parse(WEB)
    assert p.client.selected_alpn_protocol() == "http/1.1"
    assert p.client.version() == "TLSv1.3"
    assert peer_spiffe_id(p.server) == SpiffeId.parse(WEB)


def test_contexts_refuse_old_protocols(ca) -> None:  # type: ignore[no-untyped-def]
    s, c = _ctxs(ca)
    assert s.minimum_version == ssl.TLSVersion.TLSv1_2 and c.minimum_version == ssl.TLSVersion.TLSv1_2
    assert s.verify_mode == ssl.CERT_REQUIRED and c.verify_mode == ssl.CERT_REQUIRED
    assert not c.check_hostname


def test_mesh_peers_negotiate_aes128_gcm_and_keep_every_tls13_suite(ca) -> None:  # type: ignore[no-untyped-def]
    """proxy/tls/suites.py: AES-128-GCM first (as Envoy's sidecars), the other suites still accepted."""
    s, c = _ctxs(ca)
    p = handshake(s, c)
    assert p.client.cipher()[0] == p.server.cipher()[0] == "TLS_AES_128_GCM_SHA256"
    srv, _ = svid(ca, "default", "db")
    cli, _ = svid(ca, "default", "web")
    # a peer in OpenSSL's default order (AES-256-GCM first), as client: the mesh server's preference wins
    plain_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain_client.check_hostname = False
    plain_client.load_verify_locations(cadata=cli.bundle_pem.decode())
    _load_cert_chain(plain_client, cli.cert_chain_pem, cli.key)
    p = handshake(s, plain_client)
    assert p.done == {"client", "server"} and p.server.cipher()[0] == "TLS_AES_128_GCM_SHA256"
    # and as server: its preference wins, a mesh client still connects
    plain_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain_server.verify_mode = ssl.CERT_REQUIRED
    plain_server.load_verify_locations(cadata=srv.bundle_pem.decode())
    _load_cert_chain(plain_server, srv.cert_chain_pem, srv.key)
    p = handshake(plain_server, c)
    assert p.done == {"client", "server"} and p.client.cipher()[0] == "TLS_AES_256_GCM_SHA384"


def test_tls12_peer_still_works(ca) -> None:  # type: ignore[no-untyped-def]
    s, c = _ctxs(ca)
    c.maximum_version = ssl.TLSVersion.TLSv1_2
    p = handshake(s, c)
    assert p.done == {"client", "server"}
    assert p.client.version() == "TLSv1.2"
    assert verify_peer(p.server, PeerPolicy(TD)) == SpiffeId.parse(WEB)


def test_through_an_operator_intermediate() -> None:
    company = root()
    inter = intermediate(company)
    srv, _ = svid(inter, "default", "db", bundle=company.root_pem)
    cli, _ = svid(inter, "default", "web", bundle=company.root_pem)
    p = handshake(build_server_context(srv), build_client_context(cli))
    assert p.done == {"client", "server"}
    assert verify_peer(p.client, PeerPolicy.expect(TD, DB)) == SpiffeId.parse(DB)


def test_wrong_identity_is_reported(ca) -> None:  # type: ignore[no-untyped-def]
    s, c = _ctxs(ca)
    p = handshake(s, c)
    with pytest.raises(TlsPeerError) as info:
        verify_peer(p.client, PeerPolicy.expect(TD, "spiffe://cluster.local/ns/default/sa/reviews"))
    assert info.value.reason == "wrong_identity"
    assert f"peer identity is {DB}" in str(info.value)


def test_wrong_trust_domain_under_a_shared_company_root() -> None:
    # two meshes chaining to one company PKI: the chain verifies, the trust domain does not
    company = root()
    ours = intermediate(company, "mesh a")
    theirs = intermediate(company, "mesh b")
    srv, _ = svid(ours, "default", "db", bundle=company.root_pem)
    cli, _ = svid(theirs, "default", "web", td="other.example", bundle=company.root_pem)
    p = handshake(build_server_context(srv), build_client_context(cli))
    assert p.done == {"client", "server"}
    with pytest.raises(TlsPeerError) as info:
        verify_peer(p.server, PeerPolicy(TD))
    assert info.value.reason == "wrong_trust_domain"
    assert "'other.example', expected 'cluster.local'" in str(info.value)


def test_expired_client_certificate_fails_the_handshake_with_the_reason(ca) -> None:  # type: ignore[no-untyped-def]
    s, c = _ctxs(ca, now=NOW - dt.timedelta(days=2))
    p = handshake(s, c)
    assert p.server_error is not None
    err = describe_tls_error(p.server_error)
    assert err.reason == "expired" and "has expired" in str(err)
    assert p.client_error is not None  # TLS 1.3: the refusal arrives as an alert on read
    assert describe_tls_error(p.client_error).reason == "peer_rejected_expired"


def test_expired_server_certificate(ca) -> None:  # type: ignore[no-untyped-def]
    srv, _ = svid(ca, "default", "db", now=NOW - dt.timedelta(days=2))
    cli, _ = svid(ca, "default", "web")
    p = handshake(build_server_context(srv), build_client_context(cli))
    assert p.client_error is not None
    assert describe_tls_error(p.client_error).reason == "expired"


def test_certificate_from_another_mesh_is_untrusted(ca) -> None:  # type: ignore[no-untyped-def]
    foreign = root("other.example")
    srv, _ = svid(ca, "default", "db")
    cli, _ = svid(foreign, "default", "web", td="other.example", bundle=ca.root_pem)
    p = handshake(build_server_context(srv), build_client_context(cli))
    err = describe_tls_error(p.server_error)  # type: ignore[arg-type]
    assert err.reason == "untrusted" and "trust bundle" in str(err)
    assert describe_tls_error(p.client_error).reason == "peer_rejected_untrusted"  # type: ignore[arg-type]


def test_client_without_certificate_is_refused(ca) -> None:  # type: ignore[no-untyped-def]
    srv, _ = svid(ca, "default", "db")
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain.check_hostname = False
    plain.load_verify_locations(cadata=ca.root_pem.decode())
    p = handshake(build_server_context(srv), plain)
    assert describe_tls_error(p.server_error).reason == "no_peer_certificate"  # type: ignore[arg-type]
    assert describe_tls_error(p.client_error).reason == "peer_requires_certificate"  # type: ignore[arg-type]


def test_verify_peer_certificate_reasons(ca) -> None:  # type: ignore[no-untyped-def]
    _tls, issued = svid(ca, "default", "web")
    assert verify_peer_certificate(issued.leaf, PeerPolicy(TD), now=NOW) == SpiffeId.parse(WEB)
    with pytest.raises(TlsPeerError) as info:
        verify_peer_certificate(issued.leaf, PeerPolicy(TD), now=NOW + dt.timedelta(days=2))
    assert info.value.reason == "expired"
    with pytest.raises(TlsPeerError) as info:
        verify_peer_certificate(issued.leaf, PeerPolicy("other.example"), now=NOW)
    assert info.value.reason == "wrong_trust_domain"
    with pytest.raises(TlsPeerError) as info:
        verify_peer_certificate(ca.root, PeerPolicy(TD), now=NOW)  # a CA cert is not an SVID
    assert info.value.reason == "not_svid"


def test_rotating_server_context_serves_the_new_certificate(ca) -> None:  # type: ignore[no-untyped-def]
    first, first_cert = svid(ca, "default", "db")
    second, second_cert = svid(ca, "default", "db")
    rotating = RotatingServerContext(build_server_context(first))
    cli, _ = svid(ca, "default", "web")
    client_ctx = build_client_context(cli)
    before = handshake(rotating.context, client_ctx)
    second_ctx = build_server_context(second)
    rotating.update(second_ctx)
    after = handshake(rotating.context, client_ctx)
    assert peer_certificate(before.client).serial_number == first_cert.leaf.serial_number  # type: ignore[union-attr]
    assert peer_certificate(after.client).serial_number == second_cert.leaf.serial_number  # type: ignore[union-attr]
    # the connection made before the swap keeps its own context (nothing is torn down)
    assert after.server.context is second_ctx and before.server.context is not second_ctx
    assert peer_certificate(before.client).serial_number == first_cert.leaf.serial_number  # type: ignore[union-attr]


def test_rotating_context_uses_the_new_trust_bundle(ca) -> None:  # type: ignore[no-untyped-def]
    # root rotation: a peer under the new root is accepted once the listener's context trusts both
    new_root = root()
    srv, _ = svid(ca, "default", "db")
    rotating = RotatingServerContext(build_server_context(srv))
    cli, _ = svid(new_root, "default", "web", bundle=ca.root_pem)
    refused = handshake(rotating.context, build_client_context(cli))
    assert describe_tls_error(refused.server_error).reason == "untrusted"  # type: ignore[arg-type]
    rotating.update(
        build_server_context(TlsMaterial(srv.cert_chain_pem, srv.key, ca.root_pem + new_root.root_pem))
    )
    accepted = handshake(rotating.context, build_client_context(cli))
    assert accepted.done == {"client", "server"}
    assert verify_peer(accepted.server, PeerPolicy(TD)) == SpiffeId.parse(WEB)


def test_key_stays_in_memory_and_material_rebuilds(ca) -> None:  # type: ignore[no-untyped-def]
    tls, _ = svid(ca)
    rebuilt = TlsMaterial(tls.cert_chain_pem, tls.key, tls.bundle_pem)
    assert build_server_context(rebuilt) is not build_server_context(rebuilt)


def test_csr_carries_only_the_spiffe_id() -> None:
    key = make_key()
    csr = make_csr(key, SpiffeId.parse(WEB))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in san] == [WEB]
    assert csr.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("rand", "expected"), [(0.5, 43200.0), (0.0, 43200.0 - 864.0), (1.0, 43200.0 + 864.0)]
)
def test_renewal_at_half_life_with_jitter(rand: float, expected: float) -> None:
    assert renewal_delay(1000.0, 1000.0 + 86400, fraction=0.5, jitter=0.01, rand=rand) == pytest.approx(
        expected
    )
    assert renewal_delay(10.0, 5.0, fraction=0.5, jitter=0.01, rand=rand) == 0.0
