"""meshbus.io/v1 MeshConfig: what Istio keeps in its mesh config (istio/api mesh/v1alpha1/config.proto).

One per mesh, in the root namespace it names. Field names and meanings are Istio's, limited to the
ones meshbus reads: the root namespace (where a policy applies mesh-wide), request path
normalization for authorization, the number of trusted proxies in front of a gateway (for
``remoteIpBlocks``), and ``extensionProviders`` — the named external authorizers, metrics, tracing
and access-log sinks that AuthorizationPolicy (CUSTOM) and Telemetry resources refer to by name.
Which of these each proxy and component acts on is in fates.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from meshbus.bus.config.types import Duration, IstioModel

PathNormalizationMode = Literal["NONE", "BASE", "DEFAULT", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]


class PathNormalization(IstioModel):
    normalization: PathNormalizationMode = "BASE"


class GatewayTopology(IstioModel):
    num_trusted_proxies: int = Field(default=0, ge=0)
    """Proxies in front of this one that append to X-Forwarded-For: the client is that many from the end."""


class ProxyDefaults(IstioModel):
    """``defaultConfig``: the part of Istio's ProxyConfig meshbus reads mesh-wide."""

    gateway_topology: GatewayTopology | None = None


class HeaderMatch(IstioModel):
    """Istio's StringMatch for header-name lists (exact, prefix or suffix; one of them)."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None


class BodyCheck(IstioModel):
    max_request_bytes: int = Field(default=0, ge=0)
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


class ExtAuthzHttp(IstioModel):
    """``envoyExtAuthzHttp``: an HTTP authorizer asked before a request a CUSTOM rule matches."""

    service: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None
    path_prefix: str | None = None
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: str | None = None
    include_request_headers_in_check: tuple[str, ...] = ()
    include_additional_headers_in_check: dict[str, str] = Field(default_factory=dict)
    include_request_body_in_check: BodyCheck | None = None
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()


class ExtAuthzGrpc(IstioModel):
    service: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: str | None = None
    include_request_body_in_check: BodyCheck | None = None


class MeshbusAuthz(IstioModel):
    """meshbus's own authorizer protocol: a check request over NATS to ``<root>.v1.authz.<subject>``
    (bus/schemas/authz.py, docs/ext-authz.md); ``subject`` is the authorizer's name, one token."""

    subject: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    timeout: Duration | None = None
    fail_open: bool = False
    status_on_error: str | None = None


class PrometheusProvider(IstioModel):
    pass


class OtelHttp(IstioModel):
    path: str = "/v1/traces"
    timeout: Duration | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class OpenTelemetryProvider(IstioModel):
    """Spans (and, through meshbus-telemetry, OTLP export) to ``service:port`` over OTLP/HTTP."""

    service: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    http: OtelHttp | None = None
    max_tag_length: int | None = Field(default=None, ge=0)


class LogFormat(IstioModel):
    text: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class FileAccessLogProvider(IstioModel):
    path: str = Field(min_length=1)
    log_format: LogFormat | None = None


class ExtensionProvider(IstioModel):
    name: str = Field(min_length=1)
    envoy_ext_authz_http: ExtAuthzHttp | None = None
    envoy_ext_authz_grpc: ExtAuthzGrpc | None = None
    meshbus_authz: MeshbusAuthz | None = None
    prometheus: PrometheusProvider | None = None
    opentelemetry: OpenTelemetryProvider | None = None
    envoy_file_access_log: FileAccessLogProvider | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ExtensionProvider:
        kinds = [
            k
            for k in (
                "envoy_ext_authz_http",
                "envoy_ext_authz_grpc",
                "meshbus_authz",
                "prometheus",
                "opentelemetry",
                "envoy_file_access_log",
            )
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise PydanticCustomError(
                "provider_kind",
                "extension provider {name!r} must set exactly one provider type, not {n}",
                {"name": self.name, "n": len(kinds)},
            )
        return self


class DefaultProviders(IstioModel):
    metrics: tuple[str, ...] = ()
    tracing: tuple[str, ...] = ()
    access_logging: tuple[str, ...] = ()


class MeshConfigSpec(IstioModel):
    root_namespace: str = "istio-system"
    trust_domain: str | None = None
    path_normalization: PathNormalization | None = None
    default_config: ProxyDefaults | None = None
    extension_providers: tuple[ExtensionProvider, ...] = ()
    default_providers: DefaultProviders | None = None
    enable_tracing: bool | None = None

    @model_validator(mode="after")
    def _provider_names_unique(self) -> MeshConfigSpec:
        seen: set[str] = set()
        for p in self.extension_providers:
            if p.name in seen:
                raise PydanticCustomError(
                    "provider_name", "extension provider name {name!r} is used twice", {"name": p.name}
                )
            seen.add(p.name)
        return self

    def provider(self, name: str) -> ExtensionProvider | None:
        return next((p for p in self.extension_providers if p.name == name), None)
