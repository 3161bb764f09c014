"""Per-kind validator table (Istio's registry, one module per kind instead of one 100 KB file)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshbus.bus.config import fates
from meshbus.bus.config.resources import Resource
from meshbus.bus.config.result import Validation
from meshbus.bus.config.source import PathKey
from meshbus.bus.config.validation import (
    authorization_policy,
    destination_rule,
    envoy_filter,
    gateway,
    gateway_api,
    local_rate_limit,
    mesh_config,
    peer_authentication,
    plugin,
    rate_limit,
    request_authentication,
    service_entry,
    sidecar,
    telemetry,
    virtual_service,
    wasm_plugin,
    workload_entry,
    workload_group,
)
from meshbus.bus.config.validation.findings import Findings

Validator = Callable[[Resource, Findings], None]

VALIDATORS: dict[str, Validator] = {
    "VirtualService": virtual_service.validate,
    "DestinationRule": destination_rule.validate,
    "Gateway": gateway.validate,
    "ServiceEntry": service_entry.validate,
    "WorkloadEntry": workload_entry.validate,
    "Sidecar": sidecar.validate,
    "PeerAuthentication": peer_authentication.validate,
    "RequestAuthentication": request_authentication.validate,
    "AuthorizationPolicy": authorization_policy.validate,
    "LocalRateLimit": local_rate_limit.validate,
    "RateLimit": rate_limit.validate,
    "Plugin": plugin.validate,
    "MeshConfig": mesh_config.validate,
    "EnvoyFilter": envoy_filter.validate,
    "WasmPlugin": wasm_plugin.validate,
    "Telemetry": telemetry.validate,
    "WorkloadGroup": workload_group.validate,
    "ProxyConfig": workload_group.validate,
    "KubernetesGateway": gateway_api.validate,
    "HTTPRoute": gateway_api.validate,
    "GRPCRoute": gateway_api.validate,
    "TCPRoute": gateway_api.validate,
    "TLSRoute": gateway_api.validate,
    "ReferenceGrant": gateway_api.validate,
}
"""KEY_KIND -> its semantic checks."""


def validate(
    resource: Resource,
    *,
    label: str = "",
    path_map: Callable[[Sequence[str | int]], PathKey] | None = None,
) -> Validation:
    """Semantic checks for one schema-valid resource; every finding, not just the first.

    First the fates (fates.py): a warning for each kind or field meshbus does not enforce, an error
    for each it refuses. ``label`` overrides how messages name the resource (the loader passes the
    name as written).
    """
    findings = Findings(resource, label=label, path_map=path_map)
    fates.check(resource, findings)
    validator = VALIDATORS.get(resource.KEY_KIND)
    if validator is not None:
        validator(resource, findings)
    return findings.validation
