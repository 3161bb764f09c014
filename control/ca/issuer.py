"""CA material (self-signed root or operator intermediate) and X.509-SVID signing. Sans-IO.

`CaMaterial` is what every replica loads from the same files; `Issuer.sign` turns an
already-validated CSR + SPIFFE ID into a leaf that follows the X509-SVID rules:
the SPIFFE ID as the only URI SAN (critical, since the subject is empty, as Istio does),
``cA=false``, key usage digitalSignature (critical), EKU serverAuth + clientAuth, a
random 159-bit serial, and a lifetime capped by the signing certificate's own.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshbus.bus.spiffe import BUS_SEGMENT, InvalidSpiffeIdError, SpiffeId, load_pem_chain

from .errors import CaConfigError

ROOT_TTL = dt.timedelta(days=3650)  # Istio CITADEL_SELF_SIGNED_CA_CERT_TTL
DEFAULT_WORKLOAD_TTL = dt.timedelta(hours=24)  # Istio DEFAULT_WORKLOAD_CERT_TTL
MAX_WORKLOAD_TTL = dt.timedelta(days=90)  # Istio MAX_WORKLOAD_CERT_TTL
CLOCK_SKEW = dt.timedelta(minutes=1)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    trust_domain: str = "cluster.local"
    workload_ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL
    max_workload_ttl: dt.timedelta = MAX_WORKLOAD_TTL
    clock_skew: dt.timedelta = CLOCK_SKEW
    """notBefore is backdated by this much so a peer whose clock lags still accepts the leaf."""


@dataclass(frozen=True, slots=True)
class CaMaterial:
    """The signing certificate + key, the chain up to the root, and the root(s) to trust."""

    signing_cert: x509.Certificate
    signing_key: SigningKey
    intermediates: tuple[x509.Certificate, ...]
    """Between the signing certificate and the root, excluding both (empty for a self-signed root)."""
    root: x509.Certificate

    @property
    def chain_pem(self) -> bytes:
        """What follows a leaf in the chain sent to peers: the signing cert (unless it is the root) and intermediates."""
        certs = [] if self.signing_cert == self.root else [self.signing_cert, *self.intermediates]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    leaf: x509.Certificate
    chain_pem: bytes
    """Leaf first, then the CA chain (root excluded)."""

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    @property
    def serial_hex(self) -> str:
        return f"{self.leaf.serial_number:x}"


def _sig_hash(key: SigningKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def generate_root(trust_domain: str, now: dt.datetime, ttl: dt.timedelta = ROOT_TTL) -> CaMaterial:
    """A fresh self-signed ECDSA P-256 root whose SPIFFE ID is the trust domain's (no path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, "meshbus root CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(SpiffeId.of_trust_domain(trust_domain)))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return CaMaterial(signing_cert=cert, signing_key=key, intermediates=(), root=cert)


def material_from_pem(
    cert_pem: bytes, key_pem: bytes, chain_pem: bytes = b"", passphrase: bytes | None = None
) -> CaMaterial:
    """Load operator-supplied material: the signing cert, its key, and the chain up to the root.

    ``chain_pem`` lists the intermediates and ends with the root (the company PKI's); when it is
    empty the signing certificate must be self-signed (it is then the root).
    """
    certs = load_pem_chain(cert_pem)
    if not certs:
        raise CaConfigError("CA certificate file holds no PEM certificate")
    signing = certs[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise CaConfigError(f"cannot load the CA key: {exc} (wrong or missing passphrase?)") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CaConfigError(f"CA key must be ECDSA or RSA, got {type(key).__name__}")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if signing.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise CaConfigError("CA key does not match the CA certificate")
    _check_is_ca(signing)
    rest = [*certs[1:], *load_pem_chain(chain_pem)]
    if rest:
        root = rest[-1]
        intermediates = tuple(rest[:-1])
    elif signing.issuer == signing.subject:
        root = signing
        intermediates = ()
    else:
        raise CaConfigError(
            "CA certificate is not self-signed: pass --ca-chain with the intermediates and the root"
        )
    _check_chain(signing, intermediates, root)
    return CaMaterial(signing_cert=signing, signing_key=key, intermediates=intermediates, root=root)


def _check_is_ca(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CaConfigError("CA certificate has no basicConstraints") from None
    if not bc.ca:
        raise CaConfigError("CA certificate has cA=false: it cannot sign certificates")


def _check_chain(
    signing: x509.Certificate, intermediates: tuple[x509.Certificate, ...], root: x509.Certificate
) -> None:
    path = [signing, *intermediates, root]
    for child, parent in itertools.pairwise(path):
        if child == parent:
            continue
        try:
            child.verify_directly_issued_by(parent)
        except Exception as exc:  # InvalidSignature, ValueError, TypeError: all mean 'not issued by'
            raise CaConfigError(
                f"CA chain is broken: {child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()} ({exc.__class__.__name__})"
            ) from None


def key_to_pem(key: SigningKey, passphrase: bytes | None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


_LEAF_KU = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
_LEAF_BC = x509.BasicConstraints(ca=False, path_length=None)
_EMPTY_NAME = x509.Name([])


class Issuer:
    """Signs X.509-SVIDs under one `CaMaterial`. Thread-compatible, no I/O."""

    def __init__(self, material: CaMaterial, config: IssuerConfig) -> None:
        self.material = material
        self.config = config
        self._hash = _sig_hash(material.signing_key)
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(material.signing_key.public_key())
        self._issuer_name = material.signing_cert.subject
        self._chain_pem = material.chain_pem

    def lifetime(self, requested: dt.timedelta | None) -> dt.timedelta:
        if requested is None or requested <= dt.timedelta(0):
            return self.config.workload_ttl
        return min(requested, self.config.max_workload_ttl)

    def sign(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        spiffe_id: SpiffeId,
        now: dt.datetime,
        ttl: dt.timedelta | None = None,
    ) -> IssuedCert:
        """Sign a leaf for ``spiffe_id`` over ``public_key`` (the CSR was validated by the caller).
        Never an ID of the bus's own principals (``/meshbus/...``): nats-server would map it to a
        component role's user (`meshbus.control.cli.bus_auth`)."""
        if spiffe_id.is_bus_principal:
            raise InvalidSpiffeIdError(
                str(spiffe_id), f"/{BUS_SEGMENT}/... is reserved for the bus's own principals"
            )
        not_after = min(now + self.lifetime(ttl), self.material.signing_cert.not_valid_after_utc)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_EMPTY_NAME)
            .issuer_name(self._issuer_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - self.config.clock_skew)
            .not_valid_after(not_after)
            .add_extension(_LEAF_BC, critical=True)
            .add_extension(_LEAF_KU, critical=True)
            .add_extension(_LEAF_EKU, critical=False)
            # empty subject -> the SAN must be critical (RFC 5280 4.2.1.6, X509-SVID 4.1)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=True
            )
            .add_extension(self._aki, critical=False)
            .sign(self.material.signing_key, self._hash)
        )
        return IssuedCert(
            leaf=leaf, chain_pem=leaf.public_bytes(serialization.Encoding.PEM) + self._chain_pem
        )
