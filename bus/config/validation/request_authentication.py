"""Semantic checks for RequestAuthentication (issuer required, jwks xor jwksUri)."""

from __future__ import annotations

import json
from urllib.parse import urlparse

from meshbus.bus.config.resources import RequestAuthentication, Resource
from meshbus.bus.config.validation.common import check_header_name, check_labels
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, RequestAuthentication):
        return
    spec = resource.spec
    if spec.selector is not None:
        check_labels(f, ["spec", "selector", "matchLabels"], spec.selector.match_labels)
    if spec.selector is not None and (spec.target_ref is not None or spec.target_refs):
        f.error(["spec", "selector"], "set only one of selector and targetRef(s)")
    issuers: dict[str, int] = {}
    for i, rule in enumerate(spec.jwt_rules):
        path: list[str | int] = ["spec", "jwtRules", i]
        if not rule.issuer:
            f.error([*path, "issuer"], "issuer is required")
        elif rule.issuer in issuers:
            f.error(
                [*path, "issuer"], f"duplicate issuer (also jwtRules[{issuers[rule.issuer]}])", rule.issuer
            )
        issuers.setdefault(rule.issuer, i)
        if rule.jwks and rule.jwks_uri:
            f.error([*path, "jwks"], "set only one of jwks and jwksUri")
        if rule.jwks_uri:
            url = urlparse(rule.jwks_uri)
            if url.scheme not in ("http", "https") or not url.hostname:
                f.error([*path, "jwksUri"], "jwksUri must be an http(s) URL", rule.jwks_uri)
        if rule.jwks:
            try:
                keys = json.loads(rule.jwks)
            except ValueError:
                f.error([*path, "jwks"], "jwks must be a JSON Web Key Set (JSON)")
            else:
                if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
                    f.error([*path, "jwks"], 'jwks must be a JSON object with a "keys" list')
        for j, header in enumerate(rule.from_headers):
            if not header.name:
                f.error([*path, "fromHeaders", j, "name"], "header name is required")
        for j, out in enumerate(rule.output_claim_to_headers):
            check_header_name(f, [*path, "outputClaimToHeaders", j, "header"], out.header)
            if not out.claim:
                f.error([*path, "outputClaimToHeaders", j, "claim"], "claim is required")
        if rule.output_payload_to_header is not None:
            check_header_name(f, [*path, "outputPayloadToHeader"], rule.output_payload_to_header)
