"""The proxy runtime: one config version compiled into route tables and clusters (sans-IO).

``build_runtime`` turns validated resources (ServiceEntry, VirtualService, DestinationRule,
LocalRateLimit) into a ``ProxyRuntime`` the adapters swap in atomically. Requests in flight keep
the runtime they started with; ``previous=`` hands endpoint health, ejections and breaker counters
to the new runtime for clusters and endpoints that persist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshbus.proxy.build_errors import RuntimeBuildError
from meshbus.proxy.cluster import Cluster
from meshbus.proxy.cluster_builder import (
    ClusterFactory,
    Service,
    build_service_clusters,
    cluster_name,
    collect_rules,
    collect_services,
    effective_policy,
    endpoints_for,
    rules_for,
)
from meshbus.proxy.hosts import authority_aliases, host_matches, resolve_host
from meshbus.proxy.lb import Rng
from meshbus.proxy.retry import NO_RETRY
from meshbus.proxy.route_builder import Entry, RouteContext, compile_http_route, default_route
from meshbus.proxy.routing import Destination, Route, RouteTable, VirtualHost
from meshbus.proxy.tls_policy import EMPTY_PLAN, TlsPlan, build_tls_plan

__all__ = ["ProxyRuntime", "RuntimeBuildError", "build_runtime", "inbound_cluster_name"]

log = logging.getLogger(__name__)

_KINDS = ("ServiceEntry", "VirtualService", "DestinationRule", "LocalRateLimit")


@dataclass(frozen=True, slots=True)
class ProxyRuntime:
    version: str
    outbound: RouteTable  # app -> mesh
    inbound: RouteTable  # mesh -> local app: everything to cluster "inbound|<app_port>||"
    clusters: Mapping[str, Cluster]
    namespace: str = "default"
    tls: TlsPlan = EMPTY_PLAN  # TLS per cluster and inbound PeerAuthentication (proxy/tls_policy.py)

    def config_dump(self, now: float | None = None) -> dict[str, Any]:
        """JSON-able view of what is applied: version, virtual hosts with routes, clusters with endpoints."""
        t = time.monotonic() if now is None else now
        return {
            "version": self.version,
            "namespace": self.namespace,
            "listeners": {
                "outbound": {"virtualHosts": self.outbound.describe()},
                "inbound": {"virtualHosts": self.inbound.describe()},
            },
            "clusters": [c.describe(t) for c in self.clusters.values()],
            "tls": {name: c.describe() for name, c in self.tls.clusters.items()},
        }


def inbound_cluster_name(app_port: int) -> str:
    return f"inbound|{app_port}||"


def build_runtime(
    resources: Sequence[Any],
    *,
    namespace: str = "default",
    app_port: int | None = None,
    version: str | None = None,
    previous: ProxyRuntime | None = None,
    rng: Rng | None = None,
) -> ProxyRuntime:
    """Compile resources for a proxy in ``namespace``; raises RuntimeBuildError naming file, resource, field.

    ``rng`` (a ``random.random``-like callable) drives RANDOM / LEAST_REQUEST picks; tests inject one.
    """
    by_kind: dict[str, list[Any]] = {k: [] for k in _KINDS}
    for res in resources:
        if res.kind in by_kind:
            by_kind[res.kind].append(res)
    services = collect_services(by_kind["ServiceEntry"])
    rules = collect_rules(by_kind["DestinationRule"])
    factory = ClusterFactory(previous.clusters if previous is not None else None, rng)
    build_service_clusters(services, rules, factory)

    def ensure_cluster(fqdn: str, port: int, subset: str) -> str:
        name = cluster_name(port, subset, fqdn)
        if name in factory.clusters:
            return name
        # A host or port no ServiceEntry declares: an empty cluster, so requests get 503 UH as in Istio.
        svc = services.get(fqdn)
        rs = rules_for(rules, fqdn)
        subset_model = rs.subsets.get(subset) if rs is not None and subset else None
        eps: list[Any] = []
        if svc is not None:
            for sp in svc.ports:
                if sp.number == port:
                    eps = endpoints_for(svc, sp, subset_model.labels if subset_model is not None else None)
        log.warning("no ServiceEntry declares %s port %d; cluster %s has no endpoints", fqdn, port, name)
        factory.make(name, fqdn, port, subset, eps, effective_policy(rs, port, subset_model))
        return name

    ctx = RouteContext(services, rules, ensure_cluster, by_kind["LocalRateLimit"])
    outbound = _build_outbound(ctx, by_kind["VirtualService"], services, namespace)
    inbound = _build_inbound(app_port, factory)
    return ProxyRuntime(
        version=version or config_digest(resources),
        outbound=outbound,
        inbound=inbound,
        clusters=dict(factory.clusters),
        namespace=namespace,
        tls=build_tls_plan(resources, services, factory.clusters),
    )


def config_digest(resources: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for res in resources:
        dump = res.to_yaml_dict() if hasattr(res, "to_yaml_dict") else repr(res)
        h.update(json.dumps(dump, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _applies_to_sidecar(vs: Any) -> bool:
    gateways = vs.spec.gateways
    return not gateways or "mesh" in gateways


def _vs_by_host(virtual_services: list[Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    exact: dict[str, Any] = {}
    wildcard: list[tuple[str, Any]] = []
    for vs in virtual_services:
        if not _applies_to_sidecar(vs):
            continue
        for h in vs.spec.hosts:
            fq = resolve_host(h, vs.metadata.namespace)
            if fq.startswith("*"):
                if all(p != fq for p, _ in wildcard):
                    wildcard.append((fq, vs))
            elif fq in exact:
                log.warning("%s: host %s is already routed by %s; ignored here", vs.ref, fq, exact[fq].ref)
            else:
                exact[fq] = vs
    return exact, wildcard


def _vs_for(fqdn: str, exact: Mapping[str, Any], wildcard: list[tuple[str, Any]]) -> Any | None:
    vs = exact.get(fqdn)
    if vs is not None:
        return vs
    best = None
    for pattern, cand in wildcard:
        if host_matches(pattern, fqdn) and (best is None or len(pattern) > len(best[0])):
            best = (pattern, cand)
    return best[1] if best else None


def _entries(ctx: RouteContext, vs: Any, fqdn: str, port: int | None) -> list[Entry]:
    out: list[Entry] = []
    for i, http in enumerate(vs.spec.http):
        out.extend(compile_http_route(ctx, vs, i, http, fqdn, port))
    return out


def _build_outbound(
    ctx: RouteContext, virtual_services: list[Any], services: Mapping[str, Service], namespace: str
) -> RouteTable:
    exact, wildcard = _vs_by_host(virtual_services)
    vhosts: list[VirtualHost] = []
    by_authority: dict[str, VirtualHost] = {}
    aliased: list[tuple[list[str], int, VirtualHost, bool]] = []
    for fqdn, svc in services.items():
        vs = _vs_for(fqdn, exact, wildcard)
        default_port = svc.default_port()
        for sp in svc.ports:
            entries = _entries(ctx, vs, fqdn, sp.number) if vs is not None else []
            if vs is None:
                entries = [((), default_route(ctx, fqdn, sp.number))]
            aliases = authority_aliases(fqdn, namespace)
            domains = [d for a in aliases for d in (a, f"{a}:{sp.number}")]
            vh = VirtualHost(
                fqdn, sp.number, entries, domains if sp.number == default_port else domains[1::2]
            )
            vhosts.append(vh)
            aliased.append((aliases, sp.number, vh, sp.number == default_port))
    # FQDNs first so a short alias can never shadow a full name.
    for aliases, port, vh, is_default in aliased:
        by_authority.setdefault(f"{aliases[0]}:{port}", vh)
        if is_default:
            by_authority.setdefault(aliases[0], vh)
    for aliases, port, vh, is_default in aliased:
        for a in aliases[1:]:
            by_authority.setdefault(f"{a}:{port}", vh)
            if is_default:
                by_authority.setdefault(a, vh)
    # VirtualService hosts that are not services (e.g. an external name): routes on any port.
    for fq, vs in exact.items():
        if fq in services:
            continue
        vh = VirtualHost(fq, None, _entries(ctx, vs, fq, None), [fq])
        vhosts.append(vh)
        by_authority.setdefault(fq, vh)
    wild_vhs: list[tuple[str, VirtualHost]] = []
    catch_all = None
    for pattern, vs in wildcard:
        vh = VirtualHost(pattern, None, _entries(ctx, vs, pattern, None), [pattern])
        vhosts.append(vh)
        if pattern == "*":
            catch_all = vh
        else:
            wild_vhs.append((pattern[1:], vh))
    return RouteTable(vhosts, by_authority, wild_vhs, catch_all)


def _build_inbound(app_port: int | None, factory: ClusterFactory) -> RouteTable:
    if app_port is None:
        return RouteTable([], {})
    name = inbound_cluster_name(app_port)
    factory.make(name, name, app_port, "", [("127.0.0.1", app_port, {})], {})
    route = Route(
        name="default",
        virtual_host="inbound",
        destinations=(Destination(name, "127.0.0.1", app_port, ""),),
        cum_weights=(100,),
        retry=NO_RETRY,  # Istio sets no retry policy on inbound routes
        port=app_port,
        described={
            "name": "default",
            "match": {"prefix": "/"},
            "destinations": [{"cluster": name, "weight": 100}],
        },
    )
    vh = VirtualHost("inbound", app_port, [((), route)], ["*"])
    return RouteTable([vh], {}, catch_all=vh)
