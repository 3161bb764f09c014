"""Semantic checks for RequestAuthentication: Istio's ValidateRequestAuthentication and its CRD rules."""

from __future__ import annotations

import json
from urllib.parse import urlparse

from meshbus.bus.config.resources import RequestAuthentication, Resource
from meshbus.bus.config.validation.common import check_policy_spec
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, RequestAuthentication):
        return
    spec = resource.spec
    check_policy_spec(f, spec)
    issuers: dict[str, int] = {}
    for i, rule in enumerate(spec.jwt_rules):
        path: list[str | int] = ["spec", "jwtRules", i]
        if not rule.issuer and not rule.jwks_uri:
            f.error([*path, "issuer"], "issuer or jwksUri must be set")
        elif rule.issuer in issuers:
            # Istio accepts it; which of the two rules checks a token is then up to the proxy.
            f.warn(
                [*path, "issuer"],
                f"duplicate issuer (also jwtRules[{issuers[rule.issuer]}]): only one of the rules applies",
                rule.issuer,
            )
        if rule.issuer:
            issuers.setdefault(rule.issuer, i)
        if rule.jwks and rule.jwks_uri:
            f.error([*path, "jwks"], "only one of jwks or jwksUri can be set")
        if rule.jwks_uri:
            try:
                url = urlparse(rule.jwks_uri)
                host = url.hostname
            except ValueError:  # "http://[": urllib refuses it (found by fuzzing: tests/fuzz/crashes/config/)
                url, host = urlparse(""), None
            if url.scheme not in ("http", "https") or not host:
                f.error([*path, "jwksUri"], "url must have scheme http:// or https://", rule.jwks_uri)
        if rule.jwks:
            try:
                keys = json.loads(rule.jwks)
            except ValueError:
                f.error([*path, "jwks"], "jwks parse error: not a JSON Web Key Set (JSON)")
            else:
                if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
                    f.error([*path, "jwks"], 'jwks parse error: a JSON object with a "keys" list is expected')
