"""SPIFFE IDs and X.509-SVID checks shared by the CA (control) and the proxy.

Both sides need the same rules, and the dependency direction (proxy -> bus <- control)
leaves bus as the one place for them. Sans-IO: pure functions over strings and
`cryptography` certificate objects.

Rules (spiffe/spiffe ``standards/SPIFFE-ID.md`` and ``X509-SVID.md``):

- ``spiffe://<trust-domain>/<path>``: scheme ``spiffe``; trust domain non-empty, lowercase
  ``[a-z0-9._-]``, no port or userinfo, no percent-encoding; path segments ``[a-zA-Z0-9._-]``,
  no empty, ``.`` or ``..`` segments, no trailing ``/``; no query or fragment; at most 2048 bytes.
- An SVID leaf carries exactly one URI SAN (its SPIFFE ID, with a non-root path), ``cA=false``,
  key usage with digitalSignature and without keyCertSign/cRLSign.
- meshbus (as Istio) names workloads ``spiffe://<td>/ns/<namespace>/sa/<service-account>``; the
  bus's own principals (component roles, the bootstrap user, proxies without identity: their NATS
  client certificates, `meshbus.control.cli.bus_auth`) are ``spiffe://<td>/meshbus/<kind>/<name>``, a
  form meshbus-ca never issues to a workload.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

# cryptography is imported where it is used: a standalone proxy worker imports this module
# through its TLS glue but must not pay ~9 MB for it until a certificate is actually handled.
if TYPE_CHECKING:
    from cryptography import x509

DEFAULT_TRUST_DOMAIN = "cluster.local"
MAX_ID_BYTES = 2048
_SCHEME = "spiffe://"
_TD_RE = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
BUS_SEGMENT = "meshbus"
"""First path segment of the bus's own principals: nats-server maps such a certificate to a component
role's user, so no workload certificate may ever carry it."""


class InvalidSpiffeIdError(ValueError):
    """A string is not a valid SPIFFE ID; the message says which rule it breaks."""

    def __init__(self, value: str, why: str) -> None:
        super().__init__(f"meshbus: invalid SPIFFE ID {value!r}: {why}")
        self.value = value
        self.why = why


def validate_trust_domain(td: str) -> str:
    if not td:
        raise InvalidSpiffeIdError(td, "trust domain is empty")
    if not _TD_RE.match(td):
        raise InvalidSpiffeIdError(
            td, "trust domain may only hold lowercase letters, digits, '.', '-' and '_' (no port or userinfo)"
        )
    return td


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed SPIFFE ID. ``str(id)`` gives the canonical URI back."""

    trust_domain: str
    path: str = ""
    """Empty for a trust domain's own ID (CA certificates), else ``/seg/seg...``."""

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        if len(value.encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeIdError(value[:64] + "...", f"longer than {MAX_ID_BYTES} bytes")
        if not value.startswith(_SCHEME):
            raise InvalidSpiffeIdError(value, "scheme must be 'spiffe://' (lowercase)")
        rest = value[len(_SCHEME) :]
        if "?" in rest or "#" in rest:
            raise InvalidSpiffeIdError(value, "query and fragment are not allowed")
        if "%" in rest:
            raise InvalidSpiffeIdError(value, "percent-encoding is not allowed")
        td, slash, path = rest.partition("/")
        if "@" in td or ":" in td:
            raise InvalidSpiffeIdError(value, "trust domain may not hold userinfo or a port")
        try:
            validate_trust_domain(td)
        except InvalidSpiffeIdError as exc:
            raise InvalidSpiffeIdError(value, exc.why) from None
        if not slash:
            return cls(td, "")
        if not path:
            raise InvalidSpiffeIdError(value, "path may not end with '/'")
        for seg in path.split("/"):
            if not seg:
                raise InvalidSpiffeIdError(value, "path segments may not be empty (no '//' or trailing '/')")
            if seg in (".", ".."):
                raise InvalidSpiffeIdError(value, "path segments may not be '.' or '..'")
            if not _SEGMENT_RE.match(seg):
                raise InvalidSpiffeIdError(
                    value, f"path segment {seg!r} may only hold letters, digits, '.', '-' and '_'"
                )
        return cls(td, "/" + path)

    @classmethod
    def workload(cls, trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
        """``spiffe://<td>/ns/<namespace>/sa/<service-account>`` (validated)."""
        value = f"{_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        for what, name in (("namespace", namespace), ("service account", service_account)):
            if not _SEGMENT_RE.match(name) or name in (".", ".."):
                raise InvalidSpiffeIdError(value, f"{what} {name!r} must be one path segment [a-zA-Z0-9._-]")
        return cls.parse(value)

    @classmethod
    def bus_principal(cls, trust_domain: str, kind: str, name: str) -> SpiffeId:
        """``spiffe://<td>/meshbus/<kind>/<name>``: a bus principal's NATS identity (validated)."""
        return cls.parse(f"{_SCHEME}{trust_domain}/{BUS_SEGMENT}/{kind}/{name}")

    @property
    def is_bus_principal(self) -> bool:
        """True for ``/meshbus/...``: reserved for the bus's own client certificates."""
        return self.path.split("/")[1:2] == [BUS_SEGMENT]

    @classmethod
    def of_trust_domain(cls, trust_domain: str) -> SpiffeId:
        return cls(validate_trust_domain(trust_domain), "")

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}{self.path}"

    @property
    def is_workload(self) -> bool:
        """True for the Istio shape ``/ns/<ns>/sa/<sa>``."""
        parts = self.path.split("/")
        return len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa"

    @property
    def namespace(self) -> str:
        return self.path.split("/")[2] if self.is_workload else ""

    @property
    def service_account(self) -> str:
        return self.path.split("/")[4] if self.is_workload else ""

    @property
    def principal(self) -> str:
        """AuthorizationPolicy principal form: the ID without the scheme."""
        return f"{self.trust_domain}{self.path}"


class SvidReason(StrEnum):
    """Why a certificate is not an acceptable SVID (stable strings: logs, metrics, 503 details)."""

    NOT_SVID = "not_svid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNTRUSTED = "untrusted"
    WRONG_TRUST_DOMAIN = "wrong_trust_domain"
    WRONG_IDENTITY = "wrong_identity"


class SvidError(ValueError):
    """A certificate failed SVID checks; `reason` is machine-readable, the message human."""

    def __init__(self, reason: SvidReason, message: str) -> None:
        if not message.startswith("meshbus: "):
            message = "meshbus: " + message
        super().__init__(message)
        self.reason = reason


def svid_id(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of a leaf: its one URI SAN. Raises SvidError(NOT_SVID) otherwise."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise SvidError(SvidReason.NOT_SVID, "certificate has no subjectAltName (no SPIFFE ID)") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise SvidError(SvidReason.NOT_SVID, f"an SVID has exactly one URI SAN, this one has {len(uris)}")
    try:
        sid = SpiffeId.parse(uris[0])
    except InvalidSpiffeIdError as exc:
        raise SvidError(SvidReason.NOT_SVID, str(exc)) from None
    if not sid.path:
        raise SvidError(SvidReason.NOT_SVID, f"leaf SPIFFE ID {sid} has no path (that is a trust domain ID)")
    return sid


def check_leaf_shape(cert: x509.Certificate) -> None:
    """Leaf rules of X509-SVID: not a CA, digitalSignature, no keyCertSign/cRLSign."""
    from cryptography import x509

    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise SvidError(SvidReason.NOT_SVID, "leaf certificate is a CA (basicConstraints cA=true)")
    except x509.ExtensionNotFound:
        pass
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise SvidError(SvidReason.NOT_SVID, "leaf certificate has no keyUsage") from None
    if not ku.digital_signature or ku.key_cert_sign or ku.crl_sign:
        raise SvidError(
            SvidReason.NOT_SVID, "leaf keyUsage must have digitalSignature and no keyCertSign/cRLSign"
        )


def check_validity(cert: x509.Certificate, now: dt.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise SvidError(
            SvidReason.EXPIRED,
            f"certificate expired at {cert.not_valid_after_utc.isoformat()} (now {now.isoformat()})",
        )
    if now < cert.not_valid_before_utc:
        raise SvidError(
            SvidReason.NOT_YET_VALID, f"certificate not valid before {cert.not_valid_before_utc.isoformat()}"
        )


def check_identity(sid: SpiffeId, trust_domain: str, expected: frozenset[str] | None) -> None:
    """Trust domain first (the more useful reason), then the expected IDs (None = any in the domain)."""
    if sid.trust_domain != trust_domain:
        raise SvidError(
            SvidReason.WRONG_TRUST_DOMAIN,
            f"peer {sid} is in trust domain {sid.trust_domain!r}, expected {trust_domain!r}",
        )
    if expected is not None and str(sid) not in expected:
        want = ", ".join(sorted(expected)) or "(none)"
        raise SvidError(SvidReason.WRONG_IDENTITY, f"peer identity is {sid}, expected {want}")


def verify_svid(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    *,
    trust_domain: str,
    now: dt.datetime,
    expected: frozenset[str] | None = None,
) -> SpiffeId:
    """Full SVID validation: shape, validity, identity, then RFC 5280 path validation to a root.

    Identity checks run before path validation so a foreign mesh's certificate is reported
    as ``wrong_trust_domain`` rather than the vaguer ``untrusted``.
    """
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    sid = svid_id(leaf)
    check_leaf_shape(leaf)
    check_validity(leaf, now)
    check_identity(sid, trust_domain, expected)
    if not roots:
        raise SvidError(SvidReason.UNTRUSTED, "trust bundle is empty")
    verifier = PolicyBuilder().store(Store(roots)).time(now.replace(tzinfo=None)).build_client_verifier()
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise SvidError(
            SvidReason.UNTRUSTED, f"certificate of {sid} does not chain to the trust bundle: {exc}"
        ) from None
    return sid


def has_svid_eku(cert: x509.Certificate) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku


def load_pem_chain(pem: bytes | str) -> list[x509.Certificate]:
    """All certificates in a PEM blob, in order (leaf first for a chain)."""
    from cryptography import x509

    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    return x509.load_pem_x509_certificates(data)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
