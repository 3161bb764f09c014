"""Semantic checks for EnvoyFilter (Istio's CRD rules and ValidateEnvoyFilter); not enforced by meshbus."""

from __future__ import annotations

from meshbus.bus.config.resources import EnvoyFilter, Resource
from meshbus.bus.config.validation.common import check_alpha_selector, check_policy_scope
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, EnvoyFilter):
        return
    spec = resource.spec
    if spec.workload_selector is not None and spec.target_refs:
        f.error(["spec"], "only one of targetRefs or workloadSelector can be set")
    check_policy_scope(f, ["spec", "targetRefs"], None, None, spec.target_refs)
    labels = spec.workload_selector.labels if spec.workload_selector is not None else None
    check_alpha_selector(f, ["spec", "workloadSelector", "labels"], labels, "EnvoyFilter")
    for i, cp in enumerate(spec.config_patches):
        path: list[str | int] = ["spec", "configPatches", i]
        m = cp.match
        chosen: list[str] = []
        if m is not None:
            chosen = [n for n in ("listener", "routeConfiguration", "cluster", "waypoint") if _set(m, n)]
            if len(chosen) > 1:
                f.error(
                    [*path, "match"],
                    f"set only one of listener, routeConfiguration, cluster, waypoint (got {', '.join(chosen)})",
                )
            if (m.context == "WAYPOINT") != (m.waypoint is not None) and m.context is not None:
                f.error([*path, "match"], "only support waypointMatch when context is WAYPOINT")
            if (
                m.waypoint is not None
                and m.waypoint.port_number is not None
                and not 0 < m.waypoint.port_number <= 65535
            ):
                f.error(
                    [*path, "match", "waypoint", "portNumber"],
                    "port must be between 1-65535",
                    m.waypoint.port_number,
                )
        if m is not None and m.context == "WAYPOINT":
            continue  # Istio validates nothing more for waypoint patches
        if cp.apply_to in (None, "INVALID"):
            f.error([*path, "applyTo"], "missing applyTo")
            continue
        if cp.patch is None:
            f.error([*path, "patch"], "missing patch")
            continue
        op = cp.patch.operation
        if op in (None, "INVALID"):
            f.error([*path, "patch", "operation"], "missing patch operation")
            continue
        if op != "REMOVE" and cp.patch.value is None:
            f.error([*path, "patch", "value"], "missing patch value for non-remove operation")
            continue
        if m is not None and chosen:
            want = _MATCH_FOR.get(cp.apply_to)
            if want is not None and chosen != [want]:
                f.error([*path, "match"], f"applyTo {cp.apply_to} needs a {want} match (got {chosen[0]})")
                continue
        flt = m.listener.filter_chain.filter if m and m.listener and m.listener.filter_chain else None
        if flt is not None:
            if cp.apply_to in ("LISTENER", "FILTER_CHAIN"):
                f.warn([*path, "match"], f"filter match has no effect when used with {cp.apply_to}")
            if not flt.name:
                f.error(
                    [*path, "match", "listener", "filterChain", "filter", "name"], "filter match has no name"
                )
            elif flt.sub_filter is not None:
                if cp.apply_to != "HTTP_FILTER":
                    f.error([*path, "match"], "subfilter match can be used with applyTo HTTP_FILTER only")
                elif flt.name not in _HCM:
                    f.error([*path, "match"], f"subfilter match requires filter match with {_HCM[0]}")
                elif not flt.sub_filter.name:
                    f.error([*path, "match"], "subfilter match has no name to match on")


_HCM = ("envoy.filters.network.http_connection_manager", "envoy.http_connection_manager")
_MATCH_FOR = {
    "LISTENER": "listener",
    "FILTER_CHAIN": "listener",
    "NETWORK_FILTER": "listener",
    "HTTP_FILTER": "listener",
    "ROUTE_CONFIGURATION": "routeConfiguration",
    "VIRTUAL_HOST": "routeConfiguration",
    "HTTP_ROUTE": "routeConfiguration",
    "CLUSTER": "cluster",
}


def _set(match: object, name: str) -> bool:
    attr = {"routeConfiguration": "route_configuration"}.get(name, name)
    return getattr(match, attr) is not None
