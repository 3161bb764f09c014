"""Mesh identities for proxy mTLS tests: certificates issued in-process by the CA issuer.

`StaticCertClient` stands in for `meshbus.proxy.mesh.identity.CertClient` (same ``current`` /
``add_rotation_callback`` surface); `rotate` plays a renewal.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca.issuer import CaMaterial, Issuer, IssuerConfig, generate_root
from meshbus.proxy.mesh.identity import Identity, build_identity

TD = "cluster.local"


class MeshCa:
    """One mesh root and an issuer for SVIDs under it."""

    def __init__(self, td: str = TD) -> None:
        self.td = td
        self.material: CaMaterial = generate_root(td, dt.datetime.now(dt.UTC))

    @property
    def root_pem(self) -> bytes:
        return self.material.root_pem

    def identity(
        self,
        ns: str = "default",
        sa: str = "web",
        *,
        td: str | None = None,
        ttl: dt.timedelta | None = None,
        issued: dt.datetime | None = None,
        bundle: bytes | None = None,
    ) -> Identity:
        td = td or self.td
        issuer = Issuer(self.material, IssuerConfig(trust_domain=td))
        key = ec.generate_private_key(ec.SECP256R1())
        sid = SpiffeId.workload(td, ns, sa)
        now = issued or dt.datetime.now(dt.UTC)
        cert = issuer.sign(key.public_key(), sid, now, ttl)
        return build_identity(sid, key, cert.chain_pem, bundle or self.root_pem, 1, time.time())

    def write_files(self, ident: Identity, directory: Path) -> tuple[Path, Path, Path]:
        """chain, key and root PEM files (for openssl s_client)."""
        chain, key, ca = directory / "chain.pem", directory / "key.pem", directory / "root.pem"
        chain.write_bytes(ident.cert_chain_pem)
        key.write_bytes(
            ident.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ca.write_bytes(self.root_pem)
        return chain, key, ca


class StaticCertClient:
    def __init__(self, ident: Identity) -> None:
        self.current = ident
        self._callbacks: list[Callable[[Identity], None]] = []

    def add_rotation_callback(self, cb: Callable[[Identity], None]) -> None:
        self._callbacks.append(cb)

    def rotate(self, ident: Identity) -> None:
        self.current = ident
        for cb in self._callbacks:
            cb(ident)


def web_server_cert(host: str, directory: Path) -> tuple[Path, Path, Path]:
    """A private WebPKI-style CA and a server certificate for ``host`` (DNS SAN): ca, cert, key files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test external CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ext-ca.pem", directory / "ext.pem", directory / "ext-key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file
