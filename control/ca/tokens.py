"""Bootstrap tokens: minting, parsing and the use rules. Sans-IO (the KV adapter is store.py).

A token is ``mbt1.<id>.<secret>``. The KV record (key ``<id>``) keeps only a SHA-256 of
the secret, the one SPIFFE ID it is bound to, its expiry and its use counts, so replicas
share the counts: a use is consumed with a compare-and-set on the record's revision.

Rule order when a token is presented (each failure has its own error code):
unknown/bad secret (``token_invalid``) -> expired (``token_expired``) -> used up
(``token_exhausted``) -> CSR asks for another identity (``identity_mismatch``). Failed
attempts never consume a use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass, replace

import msgpack

from meshbus.bus.spiffe import SpiffeId

from .errors import IdentityMismatchError, TokenExhaustedError, TokenExpiredError, TokenInvalidError

PREFIX = "mbt1"
MAX_TOKEN_TTL_S = 30 * 24 * 3600
"""Longest a bootstrap token may live; the KV bucket's max age is a bit longer (garbage collection)."""
MAX_USES = 1_000_000
_TOKEN_RE = re.compile(r"^mbt1\.([a-z0-9]{26})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    spiffe_id: str
    secret_sha256: str
    created_at: float
    expires_at: float
    max_uses: int
    uses: int = 0

    def to_bytes(self) -> bytes:
        return msgpack.packb(asdict(self), use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenRecord:
        raw = msgpack.unpackb(data, raw=False)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint(spiffe_id: SpiffeId, *, ttl_s: float, max_uses: int, now: float) -> tuple[str, TokenRecord]:
    """A new token string (shown once) and the record to store."""
    if not spiffe_id.is_workload:
        raise ValueError(
            f"meshbus: tokens are bound to workload identities (/ns/<ns>/sa/<sa>), not {spiffe_id}"
        )
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"meshbus: token ttl must be in (0, {MAX_TOKEN_TTL_S // 86400}d], got {ttl_s:g}s")
    if not 0 < max_uses <= MAX_USES:
        raise ValueError(f"meshbus: token uses must be in [1, {MAX_USES}], got {max_uses}")
    # hex id: a valid KV key, safe in logs (the secret never is)
    token_id = secrets.token_hex(13)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        spiffe_id=str(spiffe_id),
        secret_sha256=_hash(secret),
        created_at=now,
        expires_at=now + ttl_s,
        max_uses=max_uses,
    )
    return f"{PREFIX}.{token_id}.{secret}", record


def parse(token: str) -> tuple[str, str]:
    """``(token_id, secret)``, or TokenInvalidError (the message never echoes the secret)."""
    m = _TOKEN_RE.match(token.strip())
    if m is None:
        raise TokenInvalidError(
            "bootstrap token is malformed (expected mbt1.<id>.<secret> from 'meshctl token create')"
        )
    return m.group(1), m.group(2)


def consume(record: TokenRecord, secret: str, requested: SpiffeId, now: float) -> TokenRecord:
    """Check one use of ``record`` for ``requested``; return the record with the use counted."""
    if not hmac.compare_digest(record.secret_sha256, _hash(secret)):
        raise TokenInvalidError(f"bootstrap token {record.token_id} is not valid")
    if now >= record.expires_at:
        raise TokenExpiredError(
            f"bootstrap token {record.token_id} expired {now - record.expires_at:.0f}s ago"
        )
    if record.uses >= record.max_uses:
        raise TokenExhaustedError(
            f"bootstrap token {record.token_id} was already used {record.uses} time(s) (max {record.max_uses})"
        )
    if str(requested) != record.spiffe_id:
        raise IdentityMismatchError(
            f"bootstrap token {record.token_id} is bound to {record.spiffe_id}, but the CSR asks for {requested}"
        )
    return replace(record, uses=record.uses + 1)
