"""JWT key sets that meshbus-policy fetches and meshbus-discovery inlines into snapshots.

A RequestAuthentication ``jwtRule`` names where its keys are: inline ``jwks`` (nothing to fetch),
``jwksUri``, or only ``issuer`` (OIDC discovery: ``<issuer>/.well-known/openid-configuration`` names
the ``jwks_uri``). meshbus-policy fetches each such *source* and stores one `JwksRecord` per source
in the KV bucket ``<root>_jwks`` under `jwks_key`; meshbus-discovery watches that bucket and puts the
key set inline into the rule it sends to the selected proxies, so a proxy never fetches keys on the
request path (istiod does the same with ``jwks_resolver.go``).

Both sides name sources with `jwks_source`, so they agree without sharing code beyond this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..codec import message

JWKS_BUCKET = "jwks"
"""Bucket name under the subject root (``Subjects.kv_bucket``)."""

URI_PREFIX = "uri:"
OIDC_PREFIX = "oidc:"


def jwks_source(issuer: str, jwks_uri: str | None, jwks: str | None) -> str | None:
    """Where a rule's keys come from: ``uri:<jwksUri>``, ``oidc:<issuer>``, or None (inline jwks)."""
    if jwks:
        return None
    if jwks_uri:
        return URI_PREFIX + jwks_uri
    if issuer:
        return OIDC_PREFIX + issuer.rstrip("/")
    return None


def jwks_key(source: str) -> str:
    """The KV key of a source (URLs hold characters KV keys may not)."""
    return hashlib.sha256(source.encode()).hexdigest()[:40]


@message("meshbus.policy.v1.JwksRecord")
@dataclass(frozen=True, slots=True)
class JwksRecord:
    """The state of one key-set source, as meshbus-policy last wrote it."""

    source: str
    """`jwks_source` of the rules that use it."""
    jwks: str = ""
    """The last good key set (JWKS JSON text); empty when no fetch has succeeded within `max_age`."""
    fetched_at: float = 0.0
    """Wall time (Unix seconds) of the last successful fetch."""
    expires_at: float = 0.0
    """Wall time after which `jwks` must not be used: `fetched_at` + the policy's maximum key age.
    Discovery stops sending it then, whether or not meshbus-policy is still running."""
    checked_at: float = 0.0
    """Wall time of the last attempt, successful or not."""
    failures: int = 0
    """Failed attempts since the last success."""
    error: str = ""
    """Why the last attempt failed (empty after a success)."""
    jwks_uri: str = ""
    """The URL the keys came from (for an ``oidc:`` source, the one its discovery document names)."""

    def usable(self, now: float) -> bool:
        return bool(self.jwks) and now < self.expires_at
