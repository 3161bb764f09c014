"""networking.istio.io VirtualService (virtual_service.proto).

Every field Istio defines is declared, so a known field is accepted and an unknown one refused; what
meshbus does with each is decided in fates.py. Keep in sync with proxy/core/routing.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from meshbus.bus.config.types import (
    Duration,
    IstioModel,
    Percent,
    Port,
    PortSelector,
    StringMatch,
    deprecated,
)


class Destination(IstioModel):
    host: str
    subset: str = ""
    port: PortSelector | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(IstioModel):
    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: Port | None = None
    source_labels: dict[str, str] | None = None  # the block applies only on workloads with these labels
    gateways: tuple[str, ...] = ()
    source_namespace: str | None = None  # ... and only on workloads in this namespace
    stat_prefix: str | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: int | None = None
    headers: Headers | None = None


class HTTPRedirect(IstioModel):
    uri: str | None = None
    prefix_rewrite: str | None = None
    authority: str | None = None
    port: Port | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int = 301


class RegexRewrite(IstioModel):
    match: str
    rewrite: str


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetryBackoff(IstioModel):
    base_interval: Duration | None = None
    max_interval: Duration | None = None


class HTTPRetry(IstioModel):
    attempts: int | None = None
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: HTTPRetryBackoff | None = None


def _percent_to_percentage(model: IstioModel, old: str, new: str) -> None:
    """Honour a deprecated int percent by filling the Percent field it was replaced by."""
    value = getattr(model, old)
    if value is not None and getattr(model, new) is None:
        object.__setattr__(model, new, Percent(value=value))


class FaultDelay(IstioModel):
    fixed_delay: Duration | None = None
    percentage: Percent | None = None
    percent: Annotated[int, Field(ge=0, le=100)] | None = deprecated("percentage")
    exponential_delay: Duration | None = None

    @model_validator(mode="after")
    def _convert(self) -> FaultDelay:
        _percent_to_percentage(self, "percent", "percentage")
        return self


class FaultAbort(IstioModel):
    http_status: int | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None
    percent: Annotated[int, Field(ge=0, le=100)] | None = deprecated("percentage")

    @model_validator(mode="after")
    def _convert(self) -> FaultAbort:
        _percent_to_percentage(self, "percent", "percentage")
        return self


class HTTPFaultInjection(IstioModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None  # base64, as in the proto's JSON form


class HTTPDirectResponse(IstioModel):
    status: int
    body: HTTPBody | None = None


class HTTPMirrorPolicy(IstioModel):
    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(IstioModel):
    allow_origins: tuple[StringMatch, ...] = ()
    allow_origin: tuple[str, ...] | None = deprecated("allowOrigins")
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    @model_validator(mode="after")
    def _convert(self) -> CorsPolicy:
        if self.allow_origin and not self.allow_origins:
            object.__setattr__(self, "allow_origins", tuple(StringMatch(exact=o) for o in self.allow_origin))
        return self


class Delegate(IstioModel):
    name: str
    namespace: str = ""


class HTTPRoute(IstioModel):
    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    mirror_percentage: Percent | None = None
    mirror_percent: Annotated[int, Field(ge=0, le=100)] | None = deprecated("mirrorPercentage")
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _convert(self) -> HTTPRoute:
        _percent_to_percentage(self, "mirror_percent", "mirror_percentage")
        return self


class L4MatchAttributes(IstioModel):
    destination_subnets: tuple[str, ...] = ()
    port: Port | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""


class TLSMatchAttributes(IstioModel):
    sni_hosts: tuple[str, ...]
    destination_subnets: tuple[str, ...] = ()
    port: Port | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""


class RouteDestination(IstioModel):
    destination: Destination
    weight: int | None = None


class TCPRoute(IstioModel):
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


class TLSRoute(IstioModel):
    match: tuple[TLSMatchAttributes, ...]
    route: tuple[RouteDestination, ...] = ()


class VirtualServiceSpec(IstioModel):
    hosts: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] | None = None
    tcp: tuple[TCPRoute, ...] | None = None
    export_to: tuple[str, ...] | None = None
