"""Istio kinds meshbus validates but does not run: EnvoyFilter and WasmPlugin (envoy_filter.proto,
wasm.proto, and the limits of Istio's CRD schema).

They patch or extend Envoy, which meshbus does not use: fates.py warns so and names meshbus's own way
to do the same. ``patch.value`` and ``pluginConfig`` are free-form in Istio too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from meshbus.bus.config.types import IstioModel, PolicySelector, PolicyTargetReference, WorkloadSelector


class SubFilterMatch(IstioModel):
    name: str | None = None


class FilterMatch(IstioModel):
    name: str | None = None
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(IstioModel):
    name: str | None = None
    sni: str | None = None
    transport_protocol: str | None = None
    application_protocols: str | None = None
    filter: FilterMatch | None = None
    destination_port: int | None = Field(default=None, ge=0, le=4294967295)
    transport_socket: str | None = None


class ListenerMatch(IstioModel):
    port_number: int | None = Field(default=None, ge=0, le=4294967295)
    port_name: str | None = None
    filter_chain: FilterChainMatch | None = None
    listener_filter: str | None = None
    name: str | None = None


class RouteMatch(IstioModel):
    name: str | None = None
    action: Literal["ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"] | None = None


class VirtualHostMatch(IstioModel):
    name: str | None = None
    domain_name: str | None = None
    route: RouteMatch | None = None


class RouteConfigurationMatch(IstioModel):
    port_number: int | None = Field(default=None, ge=0, le=4294967295)
    port_name: str | None = None
    gateway: str | None = None
    vhost: VirtualHostMatch | None = None
    name: str | None = None


class ClusterMatch(IstioModel):
    port_number: int | None = Field(default=None, ge=0, le=4294967295)
    service: str | None = None
    subset: str | None = None
    name: str | None = None


class WaypointRouteMatch(IstioModel):
    name: str | None = None


class WaypointMatch(IstioModel):
    filter: FilterMatch | None = None
    route: WaypointRouteMatch | None = None
    port_number: int | None = Field(default=None, ge=0, le=4294967295)


class ProxyMatch(IstioModel):
    proxy_version: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


PatchContext = Literal["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"]


class EnvoyConfigObjectMatch(IstioModel):
    context: PatchContext | None = None
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None
    waypoint: WaypointMatch | None = None


class Patch(IstioModel):
    operation: (
        Literal[
            "INVALID",
            "MERGE",
            "ADD",
            "REMOVE",
            "INSERT_BEFORE",
            "INSERT_AFTER",
            "INSERT_FIRST",
            "REPLACE",
            "MERGE_AND_REPLACE_LIST",
        ]
        | None
    ) = None
    value: dict[str, Any] | None = None
    filter_class: Literal["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"] | None = None


ApplyTo = Literal[
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
]


class EnvoyConfigObjectPatch(IstioModel):
    apply_to: ApplyTo | None = None
    match: EnvoyConfigObjectMatch | None = None
    patch: Patch | None = None


class EnvoyFilterSpec(IstioModel):
    workload_selector: WorkloadSelector | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = Field(default=None, max_length=16)
    config_patches: tuple[EnvoyConfigObjectPatch, ...] = ()
    priority: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)


class PortSelectorRequired(IstioModel):
    number: int = Field(ge=1, le=65535)


class TrafficSelector(IstioModel):
    mode: Literal["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"] | None = None
    ports: tuple[PortSelectorRequired, ...] = ()


class EnvVar(IstioModel):
    name: str = Field(min_length=1, max_length=256)
    value_from: Literal["INLINE", "HOST"] | None = None
    value: str | None = Field(default=None, max_length=2048)


class VmConfig(IstioModel):
    env: tuple[EnvVar, ...] = Field(default=(), max_length=256)


class WasmPluginSpec(IstioModel):
    selector: PolicySelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = Field(default=None, max_length=16)
    url: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"(^$|^[a-f0-9]{64}$)")
    image_pull_policy: Literal["UNSPECIFIED_POLICY", "IfNotPresent", "Always"] | None = None
    image_pull_secret: str | None = Field(default=None, min_length=1, max_length=253)
    verification_key: str | None = None
    plugin_config: dict[str, Any] | None = None
    plugin_name: str | None = Field(default=None, min_length=1, max_length=256)
    phase: Literal["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"] | None = None
    priority: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    fail_strategy: Literal["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"] | None = None
    vm_config: VmConfig | None = None
    match: tuple[TrafficSelector, ...] = ()
    type: Literal["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"] | None = None
