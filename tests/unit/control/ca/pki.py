"""Test PKI: roots, operator-style intermediates, SVIDs and CSRs (shared by CA and TLS tests)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca.issuer import CaMaterial, IssuedCert, Issuer, IssuerConfig, generate_root
from meshbus.proxy.mesh.identity import make_csr
from meshbus.proxy.tls.contexts import TlsMaterial

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TD = "cluster.local"


def root(td: str = TD, now: dt.datetime = NOW) -> CaMaterial:
    return generate_root(td, now)


def intermediate(
    parent: CaMaterial, name: str = "meshbus intermediate", now: dt.datetime = NOW
) -> CaMaterial:
    """An operator-supplied intermediate, as a company PKI would issue it."""
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(parent.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.signing_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(parent.signing_key, hashes.SHA256())
    )
    return CaMaterial(signing_cert=cert, signing_key=key, intermediates=(), root=parent.root)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def csr_pem(key: ec.EllipticCurvePrivateKey, sid: SpiffeId | str) -> str:
    spiffe = sid if isinstance(sid, SpiffeId) else SpiffeId.parse(sid)
    return make_csr(key, spiffe).public_bytes(serialization.Encoding.PEM).decode()


def svid(
    material: CaMaterial,
    ns: str = "default",
    sa: str = "web",
    *,
    td: str = TD,
    now: dt.datetime = NOW,
    ttl: dt.timedelta | None = None,
    bundle: bytes | None = None,
) -> tuple[TlsMaterial, IssuedCert]:
    """An SVID for spiffe://td/ns/<ns>/sa/<sa> issued at ``now`` and the TLS material around it."""
    issuer = Issuer(material, IssuerConfig(trust_domain=td))
    key = ec.generate_private_key(ec.SECP256R1())
    issued = issuer.sign(key.public_key(), SpiffeId.workload(td, ns, sa), now, ttl)
    return TlsMaterial(issued.chain_pem, key, bundle if bundle is not None else material.root_pem), issued
