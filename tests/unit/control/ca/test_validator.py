"""CSR rules and renewal proofs."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca.errors import IdentityMismatchError, InvalidCsrError, RenewalRefusedError
from meshbus.control.ca.validator import parse_csr, verify_renewal
from meshbus.proxy.mesh.identity import make_csr, renewal_proof

from .pki import NOW, TD, csr_pem, intermediate, root, svid

WEB = SpiffeId.workload(TD, "default", "web")


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *sans: x509.GeneralName) -> str:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=True)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_valid_csr() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    v = parse_csr(csr_pem(key, WEB), TD)
    assert v.spiffe_id == WEB
    assert v.public_key.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_dns_sans_are_ignored_but_two_uris_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    uri = x509.UniformResourceIdentifier(str(WEB))
    assert parse_csr(_csr(key, uri, x509.DNSName("web.default")), TD).spiffe_id == WEB
    with pytest.raises(InvalidCsrError, match="exactly one URI SAN"):
        parse_csr(
            _csr(key, uri, x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/db")), TD
        )
    with pytest.raises(InvalidCsrError, match="no subjectAltName"):
        parse_csr(_csr(key), TD)


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("spiffe://other.domain/ns/default/sa/web", "outside this CA's trust domain"),
        ("spiffe://cluster.local/workload/web", "workload IDs look like"),
        ("spiffe://cluster.local", "workload IDs look like"),
        ("https://cluster.local/ns/a/sa/b", "scheme"),
        # the bus's own principals (bus_auth): nats-server maps them to component roles' users
        ("spiffe://cluster.local/meshbus/role/operator", "reserved for the bus's own principals"),
        ("spiffe://cluster.local/meshbus/proxy/plain", "reserved for the bus's own principals"),
        ("spiffe://cluster.local/meshbus/role/operator/x", "reserved for the bus's own principals"),
    ],
)
def test_csr_identity_rules(uri: str, match: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidCsrError, match=match):
        parse_csr(_csr(key, x509.UniformResourceIdentifier(uri)), TD)


def test_weak_or_odd_keys_refused() -> None:
    uri = x509.UniformResourceIdentifier(str(WEB))
    with pytest.raises(InvalidCsrError, match="curve"):
        parse_csr(_csr(ec.generate_private_key(ec.SECP256K1()), uri), TD)
    with pytest.raises(InvalidCsrError, match="too small"):
        parse_csr(_csr(rsa.generate_private_key(65537, 1024), uri), TD)


def test_garbage_and_tampered_csr() -> None:
    with pytest.raises(InvalidCsrError, match="not a PEM"):
        parse_csr("hello", TD)
    with pytest.raises(InvalidCsrError, match="larger"):
        parse_csr("x" * 20000, TD)
    pem = csr_pem(ec.generate_private_key(ec.SECP256R1()), WEB)
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit in the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(InvalidCsrError, match="signature"):
        parse_csr(tampered, TD)


def _renewal(material_ca=None, *, now=NOW, sa="web", ttl=None):  # type: ignore[no-untyped-def]
    ca = material_ca or root()
    tls, issued = svid(ca, "default", sa, now=now, ttl=ttl)
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(new_key, WEB)
    v = parse_csr(csr.public_bytes(serialization.Encoding.PEM).decode(), TD)
    return ca, tls, issued, csr, v


def test_renewal_with_current_certificate() -> None:
    ca, tls, issued, csr, v = _renewal()
    proof = renewal_proof(tls.key, csr)  # type: ignore[arg-type]
    sid = verify_renewal(v, issued.chain_pem.decode(), proof, roots=[ca.root], trust_domain=TD, now=NOW)
    assert sid == WEB


def test_renewal_through_an_intermediate() -> None:
    company = root()
    inter = intermediate(company)
    tls, issued = svid(inter)
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), WEB)
    v = parse_csr(csr.public_bytes(serialization.Encoding.PEM).decode(), TD)
    proof = renewal_proof(tls.key, csr)  # type: ignore[arg-type]
    assert (
        verify_renewal(v, issued.chain_pem.decode(), proof, roots=[company.root], trust_domain=TD, now=NOW)
        == WEB
    )


def test_renewal_refusals() -> None:
    ca, tls, issued, csr, v = _renewal()
    good = renewal_proof(tls.key, csr)  # type: ignore[arg-type]
    chain = issued.chain_pem.decode()
    # proof made by another key
    stranger = renewal_proof(ec.generate_private_key(ec.SECP256R1()), csr)
    with pytest.raises(RenewalRefusedError, match="proof does not verify"):
        verify_renewal(v, chain, stranger, roots=[ca.root], trust_domain=TD, now=NOW)
    # proof over another CSR (replay onto a new key)
    other_csr = make_csr(ec.generate_private_key(ec.SECP256R1()), WEB)
    v2 = parse_csr(other_csr.public_bytes(serialization.Encoding.PEM).decode(), TD)
    with pytest.raises(RenewalRefusedError, match="proof does not verify"):
        verify_renewal(v2, chain, good, roots=[ca.root], trust_domain=TD, now=NOW)
    # current cert expired
    with pytest.raises(RenewalRefusedError, match="expired"):
        verify_renewal(v, chain, good, roots=[ca.root], trust_domain=TD, now=NOW + dt.timedelta(days=2))
    # current cert from a root we do not trust
    with pytest.raises(RenewalRefusedError, match="untrusted"):
        verify_renewal(v, chain, good, roots=[root().root], trust_domain=TD, now=NOW)
    with pytest.raises(RenewalRefusedError, match="current certificate chain"):
        verify_renewal(v, "", good, roots=[ca.root], trust_domain=TD, now=NOW)


def test_renewal_cannot_switch_identity() -> None:
    ca = root()
    tls, issued = svid(ca, "default", "db")
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), WEB)
    v = parse_csr(csr.public_bytes(serialization.Encoding.PEM).decode(), TD)
    with pytest.raises(
        IdentityMismatchError, match=r"current certificate is spiffe://cluster\.local/ns/default/sa/db"
    ):
        verify_renewal(
            v,
            issued.chain_pem.decode(),
            renewal_proof(tls.key, csr),
            roots=[ca.root],
            trust_domain=TD,  # type: ignore[arg-type]
            now=NOW,
        )
