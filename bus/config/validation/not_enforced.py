"""Kinds meshbus accepts (after validating them) but does not act on: the warning each one gets.

The one place that says so, so the "no silent acceptance" table (kind -> enforced / not enforced /
refused) can take these entries over as they are: KEY_KIND -> what the operator is told.
"""

from __future__ import annotations

from meshbus.bus.config.resources import Resource
from meshbus.bus.config.validation.findings import Findings

_ENVOY = "meshbus runs no Envoy"
_GATEWAY_API = "meshbus has no gateway proxy and does not translate the Gateway API yet"

NOT_ENFORCED: dict[str, str] = {
    "EnvoyFilter": (
        f"EnvoyFilter is NOT ENFORCED: {_ENVOY}, so Envoy config patches have no effect; use a meshbus.io/v1 "
        "Plugin (a filter in the request path) or a meshbus.io/v1 LocalRateLimit instead"
    ),
    "WasmPlugin": (
        f"WasmPlugin is NOT ENFORCED: {_ENVOY} and loads no Wasm modules; write the filter as a meshbus.io/v1 "
        "Plugin (or use a meshbus.io/v1 LocalRateLimit for rate limits)"
    ),
    "Telemetry": (
        "Telemetry is NOT ENFORCED yet: meshbus's telemetry does not read it (metrics, traces and access logs "
        "use their defaults)"
    ),
    "WorkloadGroup": (
        "WorkloadGroup is NOT ENFORCED: meshbus workloads register themselves (meshbus-proxy --mesh), so no "
        "WorkloadEntry is created from this template"
    ),
    "ProxyConfig": "ProxyConfig is NOT ENFORCED: a meshbus sidecar takes its settings from its command line",
    "KubernetesGateway": f"Gateway (gateway.networking.k8s.io) is NOT ENFORCED: {_GATEWAY_API}",
    "HTTPRoute": f"HTTPRoute is NOT ENFORCED: {_GATEWAY_API}; use a VirtualService",
    "GRPCRoute": f"GRPCRoute is NOT ENFORCED: {_GATEWAY_API}; use a VirtualService",
    "TCPRoute": f"TCPRoute is NOT ENFORCED: {_GATEWAY_API}",
    "TLSRoute": f"TLSRoute is NOT ENFORCED: {_GATEWAY_API}",
    "ReferenceGrant": f"ReferenceGrant is NOT ENFORCED: {_GATEWAY_API}",
}


def warn(resource: Resource, f: Findings) -> None:
    """The kind-level NOT ENFORCED warning, on the ``kind`` line, for the kinds listed above."""
    message = NOT_ENFORCED.get(resource.KEY_KIND)
    if message is not None:
        f.warn(["kind"], message)
