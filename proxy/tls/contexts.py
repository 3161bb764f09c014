"""TLS building blocks for mesh mTLS: contexts from PEMs, SPIFFE peer checks, failure reasons.

No sockets here: callers (proxy/adapters/listener.py, proxy/adapters/upstream.py) hand these contexts to
asyncio and call `verify_peer` on the ``ssl_object`` of a finished handshake.

Verification is two layers:

1. OpenSSL, during the handshake: the peer chain must reach a root of the trust bundle
   and be within its validity (``CERT_REQUIRED`` on both sides; hostname checks are off,
   SPIFFE does not use DNS names). A failure raises `ssl.SSLCertVerificationError` (our
   side) or an alert (the peer refused us); `describe_tls_error` turns both into a reason.
2. `verify_peer`, right after the handshake and before any request bytes: exactly one
   URI SAN that is a SPIFFE ID, the expected trust domain, and (outbound) the expected
   identity. Reasons: `SvidReason` (``expired``, ``wrong_trust_domain``, ``wrong_identity``...).

Contexts are immutable once built: a certificate renewal builds new ones and new
connections pick them up, while existing connections keep theirs (see
`RotatingServerContext` for a listener that was handed a single context).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: plaintext-only workers never load cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from meshbus.bus.spiffe import (
    SpiffeId,
    SvidError,
    SvidReason,
    check_identity,
    check_leaf_shape,
    check_validity,
    svid_id,
)
from meshbus.proxy.tls.suites import prefer_aes128

ALPN = ["http/1.1"]
# TLS 1.2 suites when a peer cannot do 1.3: forward secrecy + AEAD only (TLS 1.3 suites are fixed).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """What a mesh context is built from: our SVID chain + key and the roots we trust."""

    cert_chain_pem: bytes
    """Leaf first, then intermediates."""
    key: PrivateKeyTypes
    """The private key object; it is never written out in the clear."""
    bundle_pem: bytes
    """Every trusted root (concatenated PEM)."""


def _base(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    prefer_aes128(ctx)  # TLS 1.3: AES-128-GCM first, as Envoy's sidecars (suites.py says why)
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx


def _private_tmpdir() -> str | None:
    shm = Path("/dev/shm")  # memory-backed where it exists: the (encrypted) key never touches a disk
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _load_cert_chain(ctx: ssl.SSLContext, cert_chain_pem: bytes, key: PrivateKeyTypes) -> None:
    """`ssl` only loads keys from files: hand it the key encrypted under a one-time password,
    in a 0700 directory that is removed as soon as OpenSSL has read it."""
    import tempfile  # here, not at the top: a worker that never loads a key does not import it

    from cryptography.hazmat.primitives import serialization

    password = secrets.token_urlsafe(24).encode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="meshbus-tls-", dir=_private_tmpdir()) as d:
        cert_file, key_file = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
        with open(os.open(cert_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(cert_chain_pem)
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_file, key_file, password=password)


def build_server_context(material: TlsMaterial, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """Inbound mTLS: present our SVID, require (or, if not ``require_client_cert``, accept) a
    client certificate that chains to the bundle. Call `verify_peer` after the handshake."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=material.bundle_pem.decode())
    _load_cert_chain(ctx, material.cert_chain_pem, material.key)
    ctx.sni_callback = _remember_sni
    return ctx


SNI_ATTRIBUTE = "meshbus_sni"
"""Where the server name a client asked for is kept on the SSLObject (AuthorizationPolicy connection.sni)."""


def _remember_sni(ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    if server_name:
        setattr(ssl_object, SNI_ATTRIBUTE, server_name)


def build_client_context(material: TlsMaterial) -> ssl.SSLContext:
    """Outbound mTLS (ISTIO_MUTUAL): present our SVID, require a server chain to the bundle.
    Hostname checking is off: `verify_peer` checks the SPIFFE identity instead."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=material.bundle_pem.decode())
    _load_cert_chain(ctx, material.cert_chain_pem, material.key)
    return ctx


def build_origination_context(
    ca_pem: bytes | None = None, *, client: TlsMaterial | None = None, alpn: Iterable[str] = ALPN
) -> ssl.SSLContext:
    """DestinationRule ``tls.mode: SIMPLE`` (or MUTUAL with ``client``) towards a non-mesh
    service: ordinary WebPKI checks, hostname included (pass ``server_hostname`` = SNI)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(alpn))
    if client is not None:
        _load_cert_chain(ctx, client.cert_chain_pem, client.key)
    return ctx


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Who we accept on a connection."""

    trust_domain: str
    allowed: frozenset[str] | None = None
    """Full SPIFFE IDs accepted (outbound: the destination's service account); None = any in the domain."""

    @classmethod
    def expect(cls, trust_domain: str, *ids: str | SpiffeId) -> PeerPolicy:
        return cls(trust_domain, frozenset(str(i) for i in ids))


class TlsPeerError(ssl.SSLError):
    """A handshake or post-handshake peer check failed. `reason` is a stable string:
    a `SvidReason` value, ``peer_rejected_*`` when the other side refused us, or ``handshake``."""

    def __init__(self, reason: str, message: str) -> None:
        if not message.startswith("meshbus: "):
            message = "meshbus: " + message
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
    from cryptography import x509

    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def peer_spiffe_id(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId | None:
    """The peer's SPIFFE ID without policy checks (for access logs), or None."""
    cert = peer_certificate(ssl_object)
    if cert is None:
        return None
    try:
        return svid_id(cert)
    except SvidError:
        return None


def verify_peer(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, policy: PeerPolicy, *, now: dt.datetime | None = None
) -> SpiffeId:
    """The verified SPIFFE ID of the peer of a completed handshake, or `TlsPeerError`.

    The chain was already validated against the bundle by OpenSSL; this adds the SVID
    rules and the identity policy. Cost: one DER parse (~20 µs), once per connection.
    """
    cert = peer_certificate(ssl_object)
    if cert is None:
        raise TlsPeerError("no_peer_certificate", "peer presented no certificate (mTLS required)")
    return verify_peer_certificate(cert, policy, now=now)


def verify_peer_certificate(
    cert: x509.Certificate, policy: PeerPolicy, *, now: dt.datetime | None = None
) -> SpiffeId:
    try:
        sid = svid_id(cert)
        check_leaf_shape(cert)
        check_validity(cert, now or dt.datetime.now(dt.UTC))
        check_identity(sid, policy.trust_domain, policy.allowed)
    except SvidError as exc:
        raise TlsPeerError(exc.reason.value, str(exc)) from None
    return sid


# X509_V_ERR_* codes OpenSSL reports in SSLCertVerificationError.verify_code
_VERIFY_REASONS = {
    9: SvidReason.NOT_YET_VALID,  # CERT_NOT_YET_VALID
    10: SvidReason.EXPIRED,  # CERT_HAS_EXPIRED
    2: SvidReason.UNTRUSTED,  # UNABLE_TO_GET_ISSUER_CERT
    18: SvidReason.UNTRUSTED,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: SvidReason.UNTRUSTED,  # SELF_SIGNED_CERT_IN_CHAIN
    20: SvidReason.UNTRUSTED,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: SvidReason.UNTRUSTED,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    7: SvidReason.UNTRUSTED,  # CERT_SIGNATURE_FAILURE
}
# TLS alerts the *peer* sent because it refused our certificate (OpenSSL reason names)
_ALERT_REASONS = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "peer_rejected_expired",
    "TLSV1_ALERT_UNKNOWN_CA": "peer_rejected_untrusted",
    "SSLV3_ALERT_BAD_CERTIFICATE": "peer_rejected_certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "peer_rejected_certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "peer_requires_certificate",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_peer_certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "WRONG_VERSION_NUMBER": "not_tls",
    "HTTP_REQUEST": "not_tls",
}
_UNTRUSTED_HINT = "not signed by a root in the trust bundle (another mesh / trust domain, or a stale bundle)"


def describe_tls_error(exc: BaseException) -> TlsPeerError:
    """Turn any handshake failure into a `TlsPeerError` with a reason for logs and 503 details."""
    if isinstance(exc, TlsPeerError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        reason = _VERIFY_REASONS.get(code)
        msg = exc.verify_message or str(exc)
        if reason is SvidReason.UNTRUSTED:
            msg = f"peer certificate {_UNTRUSTED_HINT}: {msg}"
        elif reason is not None:
            msg = f"peer {msg}"
        return TlsPeerError(reason.value if reason else "verify_failed", f"TLS verification failed: {msg}")
    if isinstance(exc, ssl.SSLError):
        name = exc.reason or ""
        alert = _ALERT_REASONS.get(name, "handshake")
        what = {
            "peer_rejected_expired": "peer refused our certificate as expired",
            "peer_rejected_untrusted": "peer refused our certificate: our root is not in its trust bundle",
            "peer_rejected_certificate": "peer refused our certificate",
            "peer_requires_certificate": "peer requires a client certificate (mTLS STRICT)",
            "no_peer_certificate": "peer presented no certificate (mTLS required)",
        }.get(alert, "TLS handshake failed")
        return TlsPeerError(alert, f"{what} ({name or exc.__class__.__name__}: {exc.strerror or exc})")
    return TlsPeerError("handshake", f"TLS handshake failed: {exc!r}")


class RotatingServerContext:
    """One context to give ``loop.create_server(ssl=...)``, whose certificate can be swapped.

    OpenSSL calls the servername callback for every ClientHello (SNI or not); it moves the
    new connection onto the current context. Connections already established keep the
    context they were made with, so a rotation never drops one.
    """

    def __init__(self, initial: ssl.SSLContext) -> None:
        self._current = initial
        self.context = initial
        initial.sni_callback = self._pick  # the front context is the first real one

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def update(self, ctx: ssl.SSLContext) -> None:
        self._current = ctx

    def _pick(self, ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if ssl_object.context is not self._current:
            ssl_object.context = self._current
