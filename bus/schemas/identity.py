"""Identity family: CSR signing, bootstrap tokens and the trust bundle (meshbus-ca).

Subjects (`meshbus.bus.subjects.Subjects`): ``ca("certify")``, ``ca("token")``, ``ca("bundle")``
request/reply; ``ca_bundle_changed()`` carries `TrustBundle` events. Only CSRs and
certificates travel: a workload's private key never leaves its proxy. ``xds_certs(<node>)`` is
answered by the proxy itself (`ProxyCertsRequest` -> `ProxyCertsReply`: the certificate it holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codec import message

RENEWAL_PROOF_CONTEXT = b"meshbus-ca-renew-v1\x00"
"""Domain separation prefix of the renewal proof signature (see `renewal_proof_payload`)."""


def renewal_proof_payload(csr_der: bytes) -> bytes:
    """The bytes a renewing proxy signs with its *current* key: context + the new CSR (DER).

    Binding the proof to the CSR makes a replayed request useless: it can only yield a
    certificate for the CSR's key, which the replayer does not hold.
    """
    return RENEWAL_PROOF_CONTEXT + csr_der


@message("meshbus.identity.v1.CertifyRequest")
@dataclass(frozen=True, slots=True)
class CertifyRequest:
    """Ask the CA to sign a CSR. Exactly one of `token` or (`current_chain_pem` + `proof`) is used."""

    csr_pem: str
    """PKCS#10 CSR (PEM) whose only URI SAN is the requested SPIFFE ID."""
    token: str = ""
    """Bootstrap token (``meshctl token create``) bound to that SPIFFE ID; empty when renewing."""
    current_chain_pem: str = ""
    """Renewal: the proxy's current SVID chain (leaf first), still valid and trusted by the bundle."""
    proof: bytes = b""
    """Renewal: signature with the current key over `renewal_proof_payload(csr_der)` (ECDSA-SHA256)."""
    ttl_seconds: int = 0
    """Requested lifetime; 0 = the CA's default (24 h), capped by its maximum."""
    node: str = ""
    """Proxy id, for the CA's logs."""


@message("meshbus.identity.v1.CertifyResponse")
@dataclass(frozen=True, slots=True)
class CertifyResponse:
    cert_chain_pem: str
    """Leaf first, then any intermediates up to (not including) the root."""
    trust_bundle_pem: str
    """Every root currently trusted (more than one during a root rotation)."""
    expires_at: float
    """Leaf notAfter, Unix seconds."""
    spiffe_id: str = ""
    serial: str = ""
    """Leaf serial number, hex."""
    trust_bundle_version: int = 0
    """`TrustBundle.version` of `trust_bundle_pem`, so a client never goes back to an older bundle."""
    snapshot_keys: list[str] = field(default_factory=list)
    """`TrustBundle.snapshot_keys` of that bundle: the keys the proxy's snapshots must be signed with."""


@message("meshbus.identity.v1.TokenCreateRequest")
@dataclass(frozen=True, slots=True)
class TokenCreateRequest:
    namespace: str
    service_account: str
    ttl_seconds: int = 3600
    max_uses: int = 1


@message("meshbus.identity.v1.TokenCreateReply")
@dataclass(frozen=True, slots=True)
class TokenCreateReply:
    token: str
    """Secret: show once; the CA stores only its hash."""
    token_id: str
    spiffe_id: str
    expires_at: float
    max_uses: int


@message("meshbus.identity.v1.BundleRequest")
@dataclass(frozen=True, slots=True)
class BundleRequest:
    """Ask for the current trust bundle. No fields."""


@dataclass(frozen=True, slots=True)
class TrustRoot:
    cert_pem: str
    trusted_until: float
    """Unix seconds; a retiring root stays trusted until then (rotation overlap)."""
    active: bool = False
    """True for the root(s) the CA currently signs under."""


@message("meshbus.identity.v1.TrustBundle")
@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The roots of one trust domain. Stored in KV and published on ``ca_bundle_changed()``."""

    trust_domain: str
    roots: tuple[TrustRoot, ...] = ()
    version: int = 0
    """Monotonic (the KV revision once stored); receivers ignore older versions."""
    updated_at: float = 0.0
    snapshot_keys: tuple[str, ...] = ()
    """Public keys (Ed25519, raw, base64) meshbus-discovery signs snapshots with (`meshbus.bus.signing`);
    a proxy that holds one applies only snapshots one of them signed. Several during a key rotation."""

    def pem(self) -> str:
        return "".join(r.cert_pem if r.cert_pem.endswith("\n") else r.cert_pem + "\n" for r in self.roots)


@message("meshbus.identity.v1.BundleReply")
@dataclass(frozen=True, slots=True)
class BundleReply:
    bundle: TrustBundle
    bundle_pem: str = field(default="")
    """Concatenated PEM of every trusted root (what ``meshctl ca bundle`` prints)."""


# -- what a proxy holds (``meshctl cert inspect PROXY_ID``, like ``istioctl proxy-config secret``)

CERT_ACTIVE = "ACTIVE"
"""The proxy holds a certificate (`ProxyCertsReply.certificate` is set)."""
CERT_NO_IDENTITY = "NO_IDENTITY"
"""The proxy was started without a bootstrap token: no mesh identity, plaintext only."""
CERT_WAITING = "WAITING_FOR_CERTIFICATE"
"""An identity is requested and not obtained yet (meshbus-ca unreachable, or before the first snapshot)."""
CERT_REFUSED = "CERTIFICATE_REFUSED"
"""meshbus-ca refused the bootstrap token; `ProxyCertsReply.last_error` says why."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """Public facts about the SVID a proxy serves with. Never the key."""

    spiffe_id: str
    serial: str
    """Leaf serial number, hex."""
    issuer: str
    """Issuer DN of the leaf (RFC 4514)."""
    not_before: float
    """Unix seconds."""
    not_after: float
    """Unix seconds."""
    renewal_at: float = 0.0
    """Unix seconds of the scheduled renewal (half the lifetime, with jitter); 0 = none scheduled."""
    chain_length: int = 1
    """Certificates in the chain the proxy presents (leaf + intermediates)."""
    bundle_version: int = 0
    """`TrustBundle.version` the proxy verifies peers against."""
    bundle_roots: int = 0
    """Roots in that bundle (two during a root rotation)."""
    renewals: int = 0
    """Renewals since the proxy started."""
    cert_chain_pem: str = ""
    """The chain itself (public), for ``openssl x509`` and friends."""


@message("meshbus.identity.v1.ProxyCertsRequest")
@dataclass(frozen=True, slots=True)
class ProxyCertsRequest:
    """Ask one proxy which certificate it holds (sent to ``xds_certs(node)``). No fields."""


@message("meshbus.identity.v1.ProxyCertsReply")
@dataclass(frozen=True, slots=True)
class ProxyCertsReply:
    node: str
    state: str = CERT_NO_IDENTITY
    """`CERT_ACTIVE`, `CERT_NO_IDENTITY`, `CERT_WAITING` or `CERT_REFUSED` (readers show unknown values as is)."""
    spiffe_id: str = ""
    """The identity requested (set even while waiting or refused)."""
    certificate: CertificateInfo | None = None
    last_error: str = ""
    """Last certificate request or renewal error ("" = none)."""
    renewal_failures: int = 0
    """Failed certificate requests/renewals since the proxy started."""
