"""The trust bundle's rotation rules. Sans-IO.

A bundle lists every root a peer must trust right now. Roots enter as *active* (a CA
replica signs under them) or as *extra* (operator-trusted, e.g. the next root published
ahead of a switch). When a replica starts under a new root, the previously active roots
become *retiring*: still trusted for ``overlap`` (long enough for every leaf they signed
to expire or be renewed), then dropped. Replicas merge into the stored bundle with a
compare-and-set, so concurrent starts converge.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from meshbus.bus.schemas.identity import TrustBundle, TrustRoot
from meshbus.bus.spiffe import load_pem_chain

_SHA256 = hashes.SHA256()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key(pem: str) -> bytes:
    return load_pem_chain(pem)[0].fingerprint(_SHA256)


def merge(
    previous: TrustBundle | None,
    *,
    trust_domain: str,
    active: list[x509.Certificate],
    extra: list[x509.Certificate],
    now: dt.datetime,
    overlap: dt.timedelta,
) -> TrustBundle:
    """The bundle after this replica's start (or a periodic sweep): active + extra + still-retiring roots."""
    ts = now.timestamp()
    out: dict[bytes, TrustRoot] = {}
    for cert in active:
        out[cert.fingerprint(_SHA256)] = TrustRoot(
            _pem(cert), cert.not_valid_after_utc.timestamp(), active=True
        )
    for cert in extra:
        out.setdefault(cert.fingerprint(_SHA256), TrustRoot(_pem(cert), cert.not_valid_after_utc.timestamp()))
    if previous is not None and previous.trust_domain == trust_domain:
        for root in previous.roots:
            fp = _key(root.cert_pem)
            if fp in out:
                continue
            until = root.trusted_until
            if root.active:  # it was signing until now: start its overlap
                until = min(until, ts + overlap.total_seconds())
            if until > ts:
                out[fp] = TrustRoot(root.cert_pem, until, active=False)
    roots = sorted(out.values(), key=lambda r: (not r.active, -r.trusted_until))
    return TrustBundle(
        trust_domain=trust_domain,
        roots=tuple(roots),
        version=previous.version if previous else 0,
        updated_at=previous.updated_at if previous else 0.0,
    )


def same_roots(a: TrustBundle | None, b: TrustBundle) -> bool:
    return (
        a is not None
        and a.trust_domain == b.trust_domain
        and a.roots == b.roots
        and a.snapshot_keys == b.snapshot_keys
    )


def roots_of(bundle: TrustBundle, now: dt.datetime) -> list[x509.Certificate]:
    """Certificates still trusted at ``now``."""
    ts = now.timestamp()
    return [c for r in bundle.roots if r.trusted_until > ts for c in load_pem_chain(r.cert_pem)]
