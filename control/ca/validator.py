"""What the CA checks before it signs. Sans-IO.

- `parse_csr`: PEM PKCS#10, self-signature valid, an acceptable key (ECDSA P-256/P-384 or
  RSA >= 2048), exactly one URI SAN that is a workload SPIFFE ID of this trust domain.
  Other SAN types in the CSR are ignored: the CA builds the leaf itself and puts only the
  SPIFFE ID in it.
- `verify_renewal`: the proxy's current chain is a valid, unexpired SVID of the same
  identity under a trusted root, and `proof` is a signature by its key over
  `renewal_proof_payload(csr_der)`.

Why renewal is proved in the request and not by the channel: every proxy talks to the CA over
the same bus, and NATS credentials name a role (proxy), not a workload, so the connection says
nothing about which identity is asking. The request carries the proof instead, as a SPIRE agent
renews with its SVID: the chain shows the identity (checked against the bundle, so only this CA
could have issued it, and only while it is valid), the signature shows possession of its private
key, and the CSR's self-signature shows possession of the new one. The signed payload is the new
CSR itself, with a domain-separation prefix: a captured request replayed yields only a
certificate for a key the replayer does not hold, and the proof cannot be reused for any other
CSR. The certificate is only ever renewed into its own SPIFFE ID. This is what lets a restarted
sidecar renew with the certificate it kept (proxy/mesh/state_dir.py) once its single-use token
is spent; an expired certificate proves nothing, and a new token is needed. There is no
revocation: a workload is cut off by letting its certificate expire or by rotating the root.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from meshbus.bus.schemas.identity import renewal_proof_payload
from meshbus.bus.spiffe import InvalidSpiffeIdError, SpiffeId, SvidError, load_pem_chain, verify_svid

from .errors import IdentityMismatchError, InvalidCsrError, RenewalRefusedError

MAX_CSR_BYTES = 16 * 1024
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True, slots=True)
class ValidCsr:
    spiffe_id: SpiffeId
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    der: bytes


def parse_csr(csr_pem: str, trust_domain: str) -> ValidCsr:
    if len(csr_pem) > MAX_CSR_BYTES:
        raise InvalidCsrError(f"CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise InvalidCsrError(f"CSR is not a PEM PKCS#10 request: {exc}") from None
    if not csr.is_signature_valid:
        raise InvalidCsrError("CSR signature does not verify (the request was altered or is not self-signed)")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise InvalidCsrError(f"CSR key curve {key.curve.name} is not allowed (use P-256 or P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidCsrError(f"CSR RSA key of {key.key_size} bits is too small (>= 2048)")
    else:
        raise InvalidCsrError(f"CSR key type {type(key).__name__} is not allowed (use ECDSA P-256)")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidCsrError("CSR has no subjectAltName: put the SPIFFE ID in a URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidCsrError(f"CSR must carry exactly one URI SAN (the SPIFFE ID), it has {len(uris)}")
    try:
        sid = SpiffeId.parse(uris[0])
    except InvalidSpiffeIdError as exc:
        raise InvalidCsrError(str(exc)) from None
    if sid.trust_domain != trust_domain:
        raise InvalidCsrError(f"CSR asks for {sid}, outside this CA's trust domain {trust_domain!r}")
    if sid.is_bus_principal:  # nats-server maps these to component roles' users (bus_auth)
        raise InvalidCsrError(f"CSR asks for {sid}: /meshbus/... is reserved for the bus's own principals")
    if not sid.is_workload:
        raise InvalidCsrError(
            f"CSR asks for {sid}; workload IDs look like spiffe://{trust_domain}/ns/<ns>/sa/<sa>"
        )
    return ValidCsr(sid, key, csr.public_bytes(serialization.Encoding.DER))


def verify_renewal(
    csr: ValidCsr,
    chain_pem: str,
    proof: bytes,
    *,
    roots: list[x509.Certificate],
    trust_domain: str,
    now: dt.datetime,
) -> SpiffeId:
    """Authenticate a renewal by the current certificate; returns its (= the CSR's) identity."""
    try:
        chain = load_pem_chain(chain_pem)
    except ValueError as exc:
        raise RenewalRefusedError(f"current certificate chain is not valid PEM: {exc}") from None
    if not chain:
        raise RenewalRefusedError("renewal needs the current certificate chain (or a bootstrap token)")
    try:
        current = verify_svid(chain[0], chain[1:], roots, trust_domain=trust_domain, now=now)
    except SvidError as exc:
        raise RenewalRefusedError(f"current certificate refused ({exc.reason.value}): {exc}") from None
    if current != csr.spiffe_id:
        raise IdentityMismatchError(f"current certificate is {current}, but the CSR asks for {csr.spiffe_id}")
    key = chain[0].public_key()
    payload = renewal_proof_payload(csr.der)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(proof, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(proof, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise RenewalRefusedError(f"current certificate key type {type(key).__name__} is not supported")
    except InvalidSignature:
        raise RenewalRefusedError(
            "renewal proof does not verify with the current certificate's key"
        ) from None
    return current
