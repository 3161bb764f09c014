"""The certificate facts a mesh-mode proxy reports, and their operator view. Sans-IO.

The proxy builds a `CertificateInfo` from the SVID it holds (`certificate_info`) and answers
``xds_certs(<node>)`` with a `ProxyCertsReply`; its admin ``/certs`` and ``meshctl cert inspect
PROXY_ID -o json`` both show `certs_doc` of that reply, so the two never disagree. Times in the doc
are ISO 8601 (UTC) plus whole seconds to go, as Envoy's ``/certs`` gives ``days_until_expiration``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .schemas.identity import CERT_ACTIVE, CertificateInfo, ProxyCertsReply
from .spiffe import SvidError, load_pem_chain, svid_id


def certificate_info(
    chain_pem: bytes | str,
    *,
    bundle_pem: bytes | str = b"",
    bundle_version: int = 0,
    renewal_at: float = 0.0,
    renewals: int = 0,
) -> CertificateInfo:
    """Facts about the leaf of ``chain_pem`` (leaf first); ValueError if it holds no certificate."""
    chain = load_pem_chain(chain_pem)
    if not chain:
        raise ValueError("meshbus: certificate chain holds no PEM certificate")
    leaf = chain[0]
    try:
        spiffe = str(svid_id(leaf))
    except SvidError as exc:  # reported, not hidden: a proxy serving a non-SVID is worth seeing
        spiffe = f"(not an SVID: {exc})"
    return CertificateInfo(
        spiffe_id=spiffe,
        serial=f"{leaf.serial_number:x}",
        issuer=leaf.issuer.rfc4514_string(),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
        renewal_at=renewal_at,
        chain_length=len(chain),
        bundle_version=bundle_version,
        bundle_roots=len(load_pem_chain(bundle_pem)) if bundle_pem else 0,
        renewals=renewals,
        cert_chain_pem=chain_pem.decode() if isinstance(chain_pem, bytes) else chain_pem,
    )


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def certs_doc(reply: ProxyCertsReply, now: float, *, with_pem: bool = True) -> dict[str, Any]:
    """The reply as a JSON-able dict (camelCase, as the rest of meshctl's -o json)."""
    doc: dict[str, Any] = {"proxy": reply.node, "state": reply.state, "identity": reply.spiffe_id}
    c = reply.certificate
    if c is not None and reply.state == CERT_ACTIVE:
        doc["identity"] = c.spiffe_id
        doc.update(
            serial=c.serial,
            issuer=c.issuer,
            notBefore=iso(c.not_before),
            notAfter=iso(c.not_after),
            lifetimeSeconds=round(c.not_after - c.not_before),
            expiresInSeconds=max(0, round(c.not_after - now)),
            expired=c.not_after <= now,
            renewalAt=iso(c.renewal_at) if c.renewal_at else None,
            renewalInSeconds=max(0, round(c.renewal_at - now)) if c.renewal_at else None,
            renewals=c.renewals,
            chainLength=c.chain_length,
            trustBundle={"version": c.bundle_version, "roots": c.bundle_roots},
        )
        if with_pem and c.cert_chain_pem:
            doc["certChainPem"] = c.cert_chain_pem
    if reply.last_error:
        doc["lastError"] = reply.last_error
    if reply.renewal_failures:
        doc["renewalFailures"] = reply.renewal_failures
    return doc
