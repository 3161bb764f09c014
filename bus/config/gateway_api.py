"""Kubernetes Gateway API kinds (gateway.networking.k8s.io): Gateway, HTTPRoute, GRPCRoute, TCPRoute,
TLSRoute, ReferenceGrant, with the limits of the Gateway API's CRD schema.

meshbus has no gateway proxy and does not translate these into its own routing yet: they are validated
(so a broken one is refused) and stored, and fates.py warns that they have no effect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from meshbus.bus.config.types import IstioModel

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_GROUP = r"^$|" + _DNS_SUBDOMAIN
_KIND = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_SECTION = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HEADER = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"

Name = Annotated[str, Field(min_length=1, max_length=253)]
Group = Annotated[str, Field(max_length=253, pattern=_GROUP)]
Kind = Annotated[str, Field(min_length=1, max_length=63, pattern=_KIND)]
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
SectionName = Annotated[str, Field(min_length=1, max_length=253, pattern=_SECTION)]
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=_HOSTNAME)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=_HEADER)]
Duration = Annotated[str, Field(pattern=r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")]


class ParentReference(IstioModel):
    group: Group | None = None
    kind: Kind | None = None
    namespace: Namespace | None = None
    name: Name
    section_name: SectionName | None = None
    port: PortNumber | None = None


class SecretObjectReference(IstioModel):
    group: Group | None = None
    kind: Kind | None = None
    name: Name
    namespace: Namespace | None = None


class LocalObjectReference(IstioModel):
    group: Group
    kind: Kind
    name: Name


class RouteGroupKind(IstioModel):
    group: Group | None = None
    kind: Kind


class LabelSelectorRequirement(IstioModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(IstioModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


class RouteNamespaces(IstioModel):
    from_: Literal["All", "Selector", "Same"] | None = Field(default=None, alias="from")
    selector: LabelSelector | None = None


class AllowedRoutes(IstioModel):
    namespaces: RouteNamespaces | None = None
    kinds: tuple[RouteGroupKind, ...] = Field(default=(), max_length=8)


class GatewayTLSConfig(IstioModel):
    mode: Literal["Terminate", "Passthrough"] | None = None
    certificate_refs: tuple[SecretObjectReference, ...] = Field(default=(), max_length=64)
    frontend_validation: dict[str, Any] | None = None
    options: dict[str, str] = Field(default_factory=dict, max_length=16)


class Listener(IstioModel):
    name: SectionName
    hostname: Hostname | None = None
    port: PortNumber
    protocol: str = Field(min_length=1, max_length=255)
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


class GatewayAddress(IstioModel):
    type: str | None = None
    value: str = Field(min_length=1, max_length=253)


class GatewayInfrastructure(IstioModel):
    labels: dict[str, str] = Field(default_factory=dict, max_length=8)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=8)
    parameters_ref: LocalObjectReference | None = None


class KubernetesGatewaySpec(IstioModel):
    gateway_class_name: Name
    listeners: tuple[Listener, ...] = Field(min_length=1, max_length=64)
    addresses: tuple[GatewayAddress, ...] = Field(default=(), max_length=16)
    infrastructure: GatewayInfrastructure | None = None
    backend_tls: dict[str, Any] | None = Field(default=None, alias="backendTLS")
    allowed_listeners: dict[str, Any] | None = None


class BackendObjectReference(IstioModel):
    group: Group | None = None
    kind: Kind | None = None
    name: Name
    namespace: Namespace | None = None
    port: PortNumber | None = None


class L4BackendRef(BackendObjectReference):
    weight: int | None = Field(default=None, ge=0, le=1000000)


class HTTPPathMatch(IstioModel):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] | None = None
    value: str | None = Field(default=None, max_length=1024)


class HTTPHeaderMatch(IstioModel):
    type: Literal["Exact", "RegularExpression"] | None = None
    name: HeaderName
    value: str = Field(min_length=1, max_length=4096)


class HTTPQueryParamMatch(IstioModel):
    type: Literal["Exact", "RegularExpression"] | None = None
    name: str = Field(min_length=1, max_length=256)
    value: str = Field(min_length=1, max_length=1024)


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class HTTPRouteMatch(IstioModel):
    path: HTTPPathMatch | None = None
    headers: tuple[HTTPHeaderMatch, ...] = Field(default=(), max_length=16)
    query_params: tuple[HTTPQueryParamMatch, ...] = Field(default=(), max_length=16)
    method: HTTPMethod | None = None


class HTTPHeader(IstioModel):
    name: HeaderName
    value: str = Field(min_length=1, max_length=4096)


class HTTPHeaderFilter(IstioModel):
    set: tuple[HTTPHeader, ...] = Field(default=(), max_length=16)
    add: tuple[HTTPHeader, ...] = Field(default=(), max_length=16)
    remove: tuple[str, ...] = Field(default=(), max_length=16)


class HTTPPathModifier(IstioModel):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = Field(default=None, max_length=1024)
    replace_prefix_match: str | None = Field(default=None, max_length=1024)


class HTTPRequestRedirectFilter(IstioModel):
    scheme: Literal["http", "https"] | None = None
    hostname: Hostname | None = None
    path: HTTPPathModifier | None = None
    port: PortNumber | None = None
    status_code: Literal[301, 302, 303, 307, 308] | None = None


class HTTPURLRewriteFilter(IstioModel):
    hostname: Hostname | None = None
    path: HTTPPathModifier | None = None


class Fraction(IstioModel):
    numerator: int = Field(ge=0)
    denominator: int | None = Field(default=None, ge=1)


class HTTPRequestMirrorFilter(IstioModel):
    backend_ref: BackendObjectReference
    percent: int | None = Field(default=None, ge=0, le=100)
    fraction: Fraction | None = None


class HTTPRouteFilter(IstioModel):
    type: Literal[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = Field(default=None, alias="urlRewrite")
    extension_ref: LocalObjectReference | None = None
    cors: dict[str, Any] | None = None


class BackendRef(L4BackendRef):
    filters: tuple[HTTPRouteFilter, ...] = Field(default=(), max_length=16)


class HTTPRouteTimeouts(IstioModel):
    request: Duration | None = None
    backend_request: Duration | None = None


class _RouteRule(IstioModel):
    name: SectionName | None = None
    filters: tuple[HTTPRouteFilter, ...] = Field(default=(), max_length=16)
    backend_refs: tuple[BackendRef, ...] = Field(default=(), max_length=16)
    session_persistence: dict[str, Any] | None = None


class HTTPRouteRule(_RouteRule):
    matches: tuple[HTTPRouteMatch, ...] = Field(default=(), max_length=64)
    timeouts: HTTPRouteTimeouts | None = None
    retry: dict[str, Any] | None = None


class _RouteSpec(IstioModel):
    parent_refs: tuple[ParentReference, ...] = Field(default=(), max_length=32)


class _HostnamedRouteSpec(_RouteSpec):
    hostnames: tuple[Hostname, ...] = Field(default=(), max_length=16)


class HTTPRouteSpec(_HostnamedRouteSpec):
    rules: tuple[HTTPRouteRule, ...] = Field(default=(), max_length=16)


class GRPCMethodMatch(IstioModel):
    type: Literal["Exact", "RegularExpression"] | None = None
    service: str | None = Field(default=None, max_length=1024)
    method: str | None = Field(default=None, max_length=1024)


class GRPCRouteMatch(IstioModel):
    method: GRPCMethodMatch | None = None
    headers: tuple[HTTPHeaderMatch, ...] = Field(default=(), max_length=16)


class GRPCRouteRule(_RouteRule):
    matches: tuple[GRPCRouteMatch, ...] = Field(default=(), max_length=64)


class GRPCRouteSpec(_HostnamedRouteSpec):
    rules: tuple[GRPCRouteRule, ...] = Field(default=(), max_length=16)


class L4RouteRule(IstioModel):
    name: SectionName | None = None
    backend_refs: tuple[L4BackendRef, ...] = Field(min_length=1, max_length=16)


class TCPRouteSpec(_RouteSpec):
    rules: tuple[L4RouteRule, ...] = Field(min_length=1, max_length=16)


class TLSRouteSpec(_HostnamedRouteSpec):
    rules: tuple[L4RouteRule, ...] = Field(min_length=1, max_length=16)


class ReferenceGrantFrom(IstioModel):
    group: Group
    kind: Kind
    namespace: Namespace


class ReferenceGrantTo(IstioModel):
    group: Group
    kind: Kind
    name: Name | None = None


class ReferenceGrantSpec(IstioModel):
    from_: tuple[ReferenceGrantFrom, ...] = Field(alias="from", min_length=1, max_length=16)
    to: tuple[ReferenceGrantTo, ...] = Field(min_length=1, max_length=16)


BackendRef.model_rebuild()
