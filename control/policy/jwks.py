"""When to fetch each JWT key set, and what a fetch's outcome does to its record (sans-IO).

The rules, istiod's (pilot/pkg/model/jwks_resolver.go) but for the failure case:

- a source no record holds yet is fetched at once;
- after a success, again ``refresh`` later (default 20 minutes, ``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``);
- after a failure, again after ``retry`` (1 minute), doubling per consecutive failure up to
  ``retry_max`` (60 minutes);
- a failed refresh leaves the last good key set in force until ``max_age`` after it was fetched
  (default 24 hours); then the record loses it and tokens of that issuer get 401.

Istio, when a fetch fails, pushes a key set that fails every token (istio/istio#37456, #53260,
#58101): an identity provider's blip becomes an outage of every authenticated request in the mesh.
meshbus keeps the last good keys instead, because key sets change rarely and gracefully (providers
publish a new key well before signing with it, and keep the old one while its tokens live), so keys
fetched an hour ago still verify today's tokens; and it bounds how long, because a key the provider
withdrew (rotated out after a leak) must stop being accepted. ``max_age`` is that bound, and the
record says when it ends (``JwksRecord.expires_at``): discovery stops sending the keys then, whether
or not any meshbus-policy is still running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meshbus.bus.codec import evolve
from meshbus.bus.schemas.jwks import JwksRecord


@dataclass(frozen=True, slots=True)
class JwksPolicy:
    refresh: float = 20 * 60.0
    retry: float = 60.0
    retry_max: float = 60 * 60.0
    max_age: float = 24 * 3600.0


def next_fetch(record: JwksRecord | None, policy: JwksPolicy) -> float:
    """Wall time at which ``record``'s source is due for a fetch (0: now)."""
    if record is None or record.checked_at <= 0:
        return 0.0
    if record.failures == 0:
        return record.checked_at + policy.refresh
    return record.checked_at + min(policy.retry_max, policy.retry * 2 ** (record.failures - 1))


def fetched(
    record: JwksRecord | None, source: str, jwks: str, jwks_uri: str, now: float, policy: JwksPolicy
) -> JwksRecord:
    """The record after a successful fetch."""
    return JwksRecord(
        source=source,
        jwks=jwks,
        fetched_at=now,
        expires_at=now + policy.max_age,
        checked_at=now,
        failures=0,
        error="",
        jwks_uri=jwks_uri,
    )


def failed(record: JwksRecord | None, source: str, error: str, now: float) -> JwksRecord:
    """The record after a failed fetch: the last good keys stay until they expire, never after."""
    if record is None:
        return JwksRecord(source=source, checked_at=now, failures=1, error=error)
    keep = record.jwks if now < record.expires_at else ""
    return evolve(record, jwks=keep, checked_at=now, failures=record.failures + 1, error=error)


def check_jwks(text: str) -> str:
    """The key set, normalized (compact JSON); ValueError when it is not a JWKS document."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS document (a JSON object with a "keys" list)')
    if not data["keys"]:
        raise ValueError("the key set has no keys")
    return json.dumps(data, separators=(",", ":"), sort_keys=True)
