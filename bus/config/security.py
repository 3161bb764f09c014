"""security.istio.io PeerAuthentication, RequestAuthentication, AuthorizationPolicy (v1beta1 protos)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshbus.bus.config.types import (
    Duration,
    IntOrString,
    IstioModel,
    NonEmptyString,
    PolicySelector,
    PolicyTargetReference,
)

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class MutualTLS(IstioModel):
    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(IstioModel):
    selector: PolicySelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: dict[int, MutualTLS] = Field(default_factory=dict, min_length=1)  # CRD minProperties


class JWTHeader(IstioModel):
    name: NonEmptyString
    prefix: str = ""


class ClaimToHeader(IstioModel):
    # Istio's CRD: a header name of token characters, so no pseudo-header (":authority").
    header: str = Field(min_length=1, pattern=r"^[-_A-Za-z0-9]+$")
    claim: NonEmptyString


class JWTRule(IstioModel):
    issuer: str = ""  # required; validation says so with the line
    audiences: tuple[NonEmptyString, ...] = ()
    jwks_uri: str | None = Field(default=None, min_length=1, max_length=2048)
    jwks: str | None = None
    from_headers: tuple[JWTHeader, ...] = ()
    from_params: tuple[NonEmptyString, ...] = ()
    from_cookies: tuple[NonEmptyString, ...] = ()
    output_payload_to_header: str | None = None
    forward_original_token: bool = False
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    timeout: Duration | None = None
    space_delimited_claims: tuple[NonEmptyString, ...] = Field(default=(), max_length=64)
    presence: Literal["OPTIONAL", "REQUIRED"] | None = None


class RequestAuthenticationSpec(IstioModel):
    selector: PolicySelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = Field(default=None, max_length=16)
    jwt_rules: tuple[JWTRule, ...] = Field(default=(), max_length=4096)


class Source(IstioModel):
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = Field(default=(), max_length=16)
    not_service_accounts: tuple[str, ...] = Field(default=(), max_length=16)
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()


class Operation(IstioModel):
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[IntOrString, ...] = ()
    not_ports: tuple[IntOrString, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class RuleFrom(IstioModel):
    source: Source


class RuleTo(IstioModel):
    operation: Operation


class Condition(IstioModel):
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


class Rule(IstioModel):
    # None (unset) differs from [] (set and empty, which Istio refuses).
    from_: tuple[RuleFrom, ...] | None = Field(default=None, alias="from", max_length=512)
    to: tuple[RuleTo, ...] | None = None
    when: tuple[Condition, ...] = ()


class ExtensionProvider(IstioModel):
    name: str = ""


class AuthorizationPolicySpec(IstioModel):
    selector: PolicySelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = Field(default=None, max_length=16)
    rules: tuple[Rule, ...] | None = Field(default=None, max_length=512)
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None
