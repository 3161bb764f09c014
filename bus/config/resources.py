"""The catalog of every kind meshbus reads (``KINDS``, ``resource_type``), and the kinds no proxy builds from.

The envelope (``Resource``, ``Metadata``) and the kinds a proxy builds its runtime from are defined in
proxy_kinds.py and re-exported here. A kind is identified by its API group and kind name
(``resource_type``), as in Kubernetes: the Gateway API's ``Gateway`` and Istio's ``Gateway`` are
different kinds. ``KEY_KIND`` is the one name per type that store keys, duplicate detection and
``meshctl get`` use (``KubernetesGateway`` for the former).
"""

from __future__ import annotations

from meshbus.bus.config.extensions import EnvoyFilterSpec, WasmPluginSpec
from meshbus.bus.config.gateway import GatewaySpec
from meshbus.bus.config.gateway_api import (
    GRPCRouteSpec,
    HTTPRouteSpec,
    KubernetesGatewaySpec,
    ReferenceGrantSpec,
    TCPRouteSpec,
    TLSRouteSpec,
)
from meshbus.bus.config.proxy_kinds import (
    _NETWORKING,
    AuthorizationPolicy,
    DestinationRule,
    LocalRateLimit,
    MeshConfig,
    Metadata,
    PeerAuthentication,
    Plugin,
    RateLimit,
    RequestAuthentication,
    Resource,
    ServiceEntry,
    Sidecar,
    Telemetry,
    VirtualService,
    WorkloadEntry,
    supported_api_versions,
)
from meshbus.bus.config.workload_group import ProxyConfigSpec, WorkloadGroupSpec

_GATEWAY_API = "gateway.networking.k8s.io"


class Gateway(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "Gateway"
    spec: GatewaySpec


class WorkloadGroup(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "WorkloadGroup"
    SPEC_REQUIRED = True
    spec: WorkloadGroupSpec


class ProxyConfig(Resource):
    GROUP, VERSIONS = "networking.istio.io", ("v1beta1",)
    KIND = "ProxyConfig"
    spec: ProxyConfigSpec


class EnvoyFilter(Resource):
    GROUP, VERSIONS = "networking.istio.io", ("v1alpha3",)
    KIND = "EnvoyFilter"
    spec: EnvoyFilterSpec


class WasmPlugin(Resource):
    GROUP, VERSIONS = "extensions.istio.io", ("v1alpha1",)
    KIND = "WasmPlugin"
    SPEC_REQUIRED = True
    spec: WasmPluginSpec


class KubernetesGateway(Resource):
    GROUP, VERSIONS = _GATEWAY_API, ("v1", "v1beta1")
    KIND = "Gateway"
    KEY_KIND = "KubernetesGateway"
    SPEC_REQUIRED = True
    spec: KubernetesGatewaySpec


class HTTPRoute(Resource):
    GROUP, VERSIONS = _GATEWAY_API, ("v1", "v1beta1")
    KIND = "HTTPRoute"
    spec: HTTPRouteSpec


class GRPCRoute(Resource):
    GROUP, VERSIONS = _GATEWAY_API, ("v1", "v1alpha2")
    KIND = "GRPCRoute"
    spec: GRPCRouteSpec


class TCPRoute(Resource):
    GROUP, VERSIONS = _GATEWAY_API, ("v1alpha2",)
    KIND = "TCPRoute"
    SPEC_REQUIRED = True
    spec: TCPRouteSpec


class TLSRoute(Resource):
    GROUP, VERSIONS = _GATEWAY_API, ("v1alpha2", "v1alpha3")
    KIND = "TLSRoute"
    SPEC_REQUIRED = True
    spec: TLSRouteSpec


class ReferenceGrant(Resource):
    GROUP, VERSIONS = _GATEWAY_API, ("v1beta1", "v1alpha2")
    KIND = "ReferenceGrant"
    spec: ReferenceGrantSpec


RESOURCE_TYPES: tuple[type[Resource], ...] = (
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    PeerAuthentication,
    RequestAuthentication,
    AuthorizationPolicy,
    LocalRateLimit,
    RateLimit,
    Plugin,
    MeshConfig,
    WorkloadGroup,
    ProxyConfig,
    EnvoyFilter,
    WasmPlugin,
    Telemetry,
    KubernetesGateway,
    HTTPRoute,
    GRPCRoute,
    TCPRoute,
    TLSRoute,
    ReferenceGrant,
)
KINDS: dict[str, type[Resource]] = {t.KEY_KIND: t for t in RESOURCE_TYPES}
"""KEY_KIND -> type: every kind meshbus reads."""
_BY_GROUP_KIND: dict[tuple[str, str], type[Resource]] = {(t.GROUP, t.KIND): t for t in RESOURCE_TYPES}
MESH_GROUPS = frozenset(t.GROUP for t in RESOURCE_TYPES)
"""API groups whose documents are mesh config: an unknown kind in one of them is an error."""
MESH_KIND_NAMES = frozenset(t.KIND for t in RESOURCE_TYPES)


def api_group(api_version: str) -> str:
    """``networking.istio.io/v1`` -> ``networking.istio.io``; core ``v1`` -> ``""``."""
    group, _, _version = api_version.rpartition("/")
    return group


def resource_type(api_version: str, kind: str) -> type[Resource] | None:
    """The type for a document's apiVersion and kind (group + kind, any version), or None."""
    return _BY_GROUP_KIND.get((api_group(api_version), kind))


def types_named(kind: str) -> list[type[Resource]]:
    """Every type whose kind name is ``kind`` (Istio's and the Gateway API's ``Gateway``)."""
    return [t for t in RESOURCE_TYPES if t.KIND == kind]


__all__ = [
    "KINDS",
    "MESH_GROUPS",
    "MESH_KIND_NAMES",
    "RESOURCE_TYPES",
    "AuthorizationPolicy",
    "DestinationRule",
    "EnvoyFilter",
    "GRPCRoute",
    "Gateway",
    "HTTPRoute",
    "KubernetesGateway",
    "LocalRateLimit",
    "MeshConfig",
    "Metadata",
    "PeerAuthentication",
    "Plugin",
    "ProxyConfig",
    "RateLimit",
    "ReferenceGrant",
    "RequestAuthentication",
    "Resource",
    "ServiceEntry",
    "Sidecar",
    "TCPRoute",
    "TLSRoute",
    "Telemetry",
    "VirtualService",
    "WasmPlugin",
    "WorkloadEntry",
    "WorkloadGroup",
    "api_group",
    "resource_type",
    "supported_api_versions",
    "types_named",
]
