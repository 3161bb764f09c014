"""The proxy runtime: one config version compiled into route tables and clusters (sans-IO).

``build_runtime`` turns validated resources (ServiceEntry, VirtualService, DestinationRule,
LocalRateLimit, PeerAuthentication) into a ``ProxyRuntime`` the adapters swap in atomically. They come
in one form whatever their source: the frozen models of meshbus.bus.config, as the YAML loader
makes them (standalone; a worker gets them pickled from its loader child) or as the mesh agent's
ResourceCache validates them from a snapshot. Requests in flight keep
the runtime they started with; ``previous=`` hands endpoint health, ejections and breaker counters
to the new runtime for clusters and endpoints that persist.

Builds are incremental: ``previous.memo`` (build/memo.py) says what each piece was compiled from,
and pieces whose inputs are the same objects are reused. When only VirtualServices changed, the
previous runtime is patched (`_patch_hosts`): only the virtual hosts they route are recompiled, so
applying a one-VirtualService change costs the same at 10 services as at 1,000.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshbus.bus.config.proxy_kinds import PeerAuthentication, Resource, VirtualService
from meshbus.proxy.build.authz_builder import inbound_authz
from meshbus.proxy.build.cluster_builder import (
    NO_POLICY,
    ClusterFactory,
    EndpointSpec,
    build_service_clusters,
    cluster_name,
    collect_rules,
    collect_services,
    effective_policy,
    endpoints_for,
    rules_for,
)
from meshbus.proxy.build.errors import RuntimeBuildError
from meshbus.proxy.build.inbound_filters import describe as describe_inbound_filters
from meshbus.proxy.build.inbound_filters import POLICY_FILTERS, inbound_filters, root_namespace
from meshbus.proxy.build.memo import BuildMemo, ByKind, Memos, OutboundParts, same
from meshbus.proxy.build.outbound_build import OutboundBuilder, vs_for, vs_hosts
from meshbus.proxy.build.route_builder import RouteContext
from meshbus.proxy.build.telemetry_policy import DEFAULT_POLICY, TelemetryPolicy, build_policy
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.lb import Rng
from meshbus.proxy.core.retry import NO_RETRY
from meshbus.proxy.core.routing import Destination, Route, RouteTable, VirtualHost
from meshbus.proxy.filters.authz import AUTHORIZATION, AuthzConfig
from meshbus.proxy.filters.builtin import build_chain
from meshbus.proxy.tls.policy import EMPTY_PLAN, TlsPlan

__all__ = ["ProxyRuntime", "RuntimeBuildError", "build_runtime", "inbound_cluster_name"]

log = logging.getLogger(__name__)


class PluginResolver(Protocol):
    """What makes a build's Plugin filters (proxy/filters/plugins/bindings.PluginRuntime)."""

    def resolve(self, resources: Sequence[Resource], *, namespace: str, labels: Mapping[str, str]) -> Any: ...


@dataclass(frozen=True, slots=True)
class ProxyRuntime:
    version: str
    outbound: RouteTable  # app -> mesh
    inbound: RouteTable  # mesh -> local app: everything to cluster "inbound|<app_port>||"
    clusters: Mapping[str, Cluster]
    namespace: str = "default"
    tls: TlsPlan = EMPTY_PLAN  # TLS per cluster and inbound PeerAuthentication (proxy/tls/policy.py)
    memo: BuildMemo | None = field(default=None, compare=False, repr=False)
    """What this build compiled from what (proxy/build/memo.py): the next build reuses unchanged pieces."""
    telemetry: TelemetryPolicy = DEFAULT_POLICY
    """What this workload records: Telemetry resources + MeshConfig (build/telemetry_policy.py)."""

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
            "authorization": self.authorization_dump(),
            "telemetry": self.telemetry.describe(),
        }

    def authz_provider_kind(self) -> str:
        """The type of the CUSTOM authorization provider on the inbound route ("" when none)."""
        authz = _inbound_filters_of(self).get(AUTHORIZATION)
        provider = authz.compiled.provider if isinstance(authz, AuthzConfig) else None
        return provider.kind if provider is not None else ""

    def authorization_dump(self) -> dict[str, Any] | None:
        """The inbound route's authorization, policies in evaluation order (None: no policy applies)."""
        authz = _inbound_filters_of(self).get(AUTHORIZATION)
        return authz.describe() if isinstance(authz, AuthzConfig) else None


def inbound_cluster_name(app_port: int) -> str:
    return f"inbound|{app_port}||"


def build_runtime(
    resources: Sequence[Resource],
    *,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    app_port: int | None = None,
    version: str | None = None,
    previous: ProxyRuntime | None = None,
    rng: Rng | None = None,
    plugins: PluginResolver | None = None,
) -> ProxyRuntime:
    """Compile resources for a proxy in ``namespace`` (see `_build_routes`), with the telemetry
    policy of this workload (build/telemetry_policy.py)."""
    runtime = _build_routes(
        resources, namespace=namespace, labels=labels, app_port=app_port, version=version,
        previous=previous, rng=rng, plugins=plugins,
    )  # fmt: skip
    try:
        policy = build_policy(resources, namespace, labels, previous.telemetry if previous is not None else None)
    except ValueError as exc:  # a CEL expression validation would have refused
        raise RuntimeBuildError(f"meshbus: Telemetry: {exc}") from None
    return runtime if runtime.telemetry is policy else dataclasses.replace(runtime, telemetry=policy)


def _build_routes(
    resources: Sequence[Resource],
    *,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    app_port: int | None = None,
    version: str | None = None,
    previous: ProxyRuntime | None = None,
    rng: Rng | None = None,
    plugins: PluginResolver | None = None,
) -> ProxyRuntime:
    """Compile resources for a proxy in ``namespace``; raises RuntimeBuildError naming file, resource, field.

    ``labels`` are this workload's: VirtualService match blocks with sourceLabels apply only when they
    fit (sourceNamespace: when it is ``namespace``).
    ``rng`` (a ``random.random``-like callable) drives RANDOM / LEAST_REQUEST picks; tests inject one.
    With ``previous``, pieces compiled from the very same resource objects are reused (build/memo.py):
    the result equals a build from scratch, at a cost that follows what changed.
    ``plugins`` (the worker's PluginRuntime, proxy/filters/plugins) makes the filters of the Plugins
    that select this workload; without it, Plugins are not run.
    """
    prev_memo = previous.memo if previous is not None else None
    source = tuple(sorted((labels or {}).items()))
    if previous is not None and prev_memo is not None and prev_memo.table is not None:
        # Fastest: VirtualServices replaced in place, nothing else touched (no pass over the kinds).
        memos = Memos(prev_memo, namespace, rng, prev_memo.rate_limits, source, prev_memo.plugins)
        memos.new.resources = tuple(resources)
        vs_change = _vs_replacements(memos, resources)
        if vs_change is not None and prev_memo.app_port == app_port:
            try:
                patched = _patch_hosts(previous, memos, *vs_change)
            except _NeedsFullBuild:
                patched = None
            if patched is not None:
                return dataclasses.replace(patched, version=version or config_digest(resources))
    by_kind = ByKind.of(resources)
    pas = tuple(by_kind.peer_authentications)
    lrls = tuple(by_kind.rate_limits)
    pset = (
        plugins.resolve(resources, namespace=namespace, labels=labels or {}) if plugins is not None else None
    )
    # RequestAuthentication / RateLimit on the inbound route (proxy/build/inbound_filters.py)
    in_filters = inbound_filters(resources, namespace, labels, _inbound_filters_of(previous))
    if previous is not None and prev_memo is not None and prev_memo.table is not None:
        memos = Memos(prev_memo, namespace, rng, lrls, source, pset)
        memos.new.resources = tuple(resources)
        try:
            patched = _patch(previous, memos, by_kind, pas, app_port)
        except _NeedsFullBuild:
            patched = None
        if patched is not None:
            inbound = patched.inbound
            prev_filters = _inbound_filters_of(previous)
            if AUTHORIZATION in prev_filters:  # _patch: the authorization's inputs are unchanged
                in_filters[AUTHORIZATION] = prev_filters[AUTHORIZATION]
            if in_filters != prev_filters:
                inbound = _inbound_table(app_port, memos.new.plugins, in_filters)
            return dataclasses.replace(patched, inbound=inbound, version=version or config_digest(resources))
    memos = Memos(prev_memo, namespace, rng, lrls, source, pset)
    memos.new.resources = tuple(resources)
    memos.new.app_port = app_port
    memos.new.service_entries = tuple(by_kind.service_entries)
    memos.new.destination_rules = tuple(by_kind.destination_rules)
    services = collect_services(by_kind.service_entries, memos.services_of)
    rules = collect_rules(by_kind.destination_rules, memos.rule_host, memos.rule_set)
    memos.new.service_map, memos.new.rule_map = services, rules
    factory = ClusterFactory(previous.clusters if previous is not None else None, rng, memos.prev.clusters)
    build_service_clusters(services, rules, factory)

    def ensure_cluster(fqdn: str, port: int, subset: str) -> str:
        name = cluster_name(port, subset, fqdn)
        if name in factory.clusters:
            return name
        # A host or port no ServiceEntry declares: an empty cluster, so requests get 503 UH as in Istio.
        svc = services.get(fqdn)
        rs = rules_for(rules, fqdn)
        log.warning("no ServiceEntry declares %s port %d; cluster %s has no endpoints", fqdn, port, name)
        inputs = ("undeclared", svc, rs)
        if factory.reuse(name, inputs):
            return name
        subset_model = rs.subsets.get(subset) if rs is not None and subset else None
        eps: list[EndpointSpec] = []
        if svc is not None:
            for sp in svc.ports:
                if sp.number == port:
                    eps = endpoints_for(svc, sp, subset_model.labels if subset_model is not None else None)
        rule = rs.resource if rs is not None else None
        policy = effective_policy(rs, port, subset_model)
        factory.make(name, fqdn, port, subset, eps, policy, rule, inputs=inputs)
        return name

    ctx = RouteContext(services, rules, ensure_cluster, by_kind.rate_limits, *memos.source, plugins=pset)
    outbound = OutboundBuilder(ctx, memos, ensure_cluster).build(
        by_kind.virtual_services, services, namespace
    )
    memos.new.authorization = tuple(by_kind.authorization)
    authz = inbound_authz(
        by_kind.authorization,
        namespace=namespace,
        labels=dict(source),
        app_port=app_port,
        clusters=factory.clusters,
    )
    if authz is not None:  # only when a policy selects this workload: otherwise no filter, no cost
        in_filters[AUTHORIZATION] = authz
    inbound = _build_inbound(app_port, factory, pset, in_filters)
    inbound_tls = memos.inbound_policy(pas, root_namespace(by_kind.authorization))
    tls = TlsPlan(memos.tls_plan_clusters(services, factory.clusters, inbound_tls), inbound_tls)
    factory.commit()  # nothing below raises: the build is good
    memos.new.clusters = factory.built_from
    memos.stats["clusters_reused"] = factory.reused
    memos.stats["clusters_built"] = len(factory.clusters) - factory.reused
    return ProxyRuntime(
        version=version or config_digest(resources),
        outbound=outbound,
        inbound=inbound,
        clusters=dict(factory.clusters),
        namespace=namespace,
        tls=tls,
        memo=memos.new,
    )


def config_digest(resources: Sequence[Resource]) -> str:
    h = hashlib.sha256()
    for res in resources:
        h.update(json.dumps(res.to_yaml_dict(), sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class _NeedsFullBuild(Exception):
    """The change is one `_patch` does not handle (a route needs a cluster no service declares)."""


def _patch(
    previous: ProxyRuntime,
    memos: Memos,
    by_kind: ByKind,
    pas: tuple[PeerAuthentication, ...],
    app_port: int | None,
) -> ProxyRuntime | None:
    """The previous runtime with only the virtual hosts of changed VirtualServices recompiled, or None
    when more than that changed (services, rules, rate limits, routes for non-service hosts).

    This is the common push (a VirtualService edited) at a cost that follows the change, not the
    mesh: services, rules, clusters and TLS decisions are the previous build's objects, untouched.
    The result equals a full build (tests/unit/proxy/test_incremental_build.py checks it).
    """
    prev = memos.prev
    if (
        prev.table is None
        or not memos.routes_reusable
        or prev.app_port != app_port
        or not same(prev.service_entries, by_kind.service_entries)
        or not same(prev.destination_rules, by_kind.destination_rules)
        or not same(prev.authorization, by_kind.authorization)
    ):
        return None
    memos.new.authorization = prev.authorization
    services, rules = prev.service_map, prev.rule_map
    exact, wildcard = OutboundBuilder(
        RouteContext(services, rules, _no_cluster, [], *memos.source), memos, _no_cluster
    ).vs_by_host(by_kind.virtual_services)
    if not same([p for p, _ in wildcard], [p for p, _ in prev.vs_wild]) or not same(
        [v for _, v in wildcard], [v for _, v in prev.vs_wild]
    ):
        return None
    old_exact = prev.vs_exact
    dirty = [h for h in exact.keys() | old_exact.keys() if exact.get(h) is not old_exact.get(h)]
    memos.inbound_policy(pas, root_namespace(by_kind.authorization))
    return _patch_hosts(previous, memos, exact, dirty)


def _no_cluster(fqdn: str, port: int, subset: str) -> str:
    raise _NeedsFullBuild(fqdn)  # only used where nothing is compiled


def _vs_replacements(
    memos: Memos, resources: Sequence[Resource]
) -> tuple[dict[str, VirtualService], list[str]] | None:
    """When the only change is VirtualServices replaced in place (same keys, same order): the new
    host -> VirtualService map and the hosts it maps differently; None otherwise. No pass over the
    kinds: a position-wise identity check, then work per changed VirtualService."""
    prev = memos.prev
    old = prev.resources
    if len(old) != len(resources):
        return None
    changed = [i for i, (a, b) in enumerate(zip(resources, old, strict=True)) if a is not b]
    if len(changed) > 8:
        return None  # a bigger change: the general path is as fast
    claims = dict(prev.claims)
    exact = dict(prev.vs_exact)
    new_vs_hosts = dict(prev.vs_hosts)
    affected: set[str] = set()
    claimed_by: dict[str, VirtualService] = {}
    for i in changed:
        was, now = old[i], resources[i]
        if not isinstance(was, VirtualService) or not isinstance(now, VirtualService):
            return None
        old_hit = prev.vs_hosts.get(id(was))
        if old_hit is None or old_hit[0] is not was:
            return None
        old_hosts = old_hit[1] or ()
        now_hosts = vs_hosts(now)
        new_hosts = now_hosts or ()
        if any(h.startswith("*") for h in (*old_hosts, *new_hosts)):
            return None  # wildcard routes apply to many hosts: the general path finds which
        del new_vs_hosts[id(was)]
        new_vs_hosts[id(now)] = (now, now_hosts)
        for h in old_hosts:
            claims[h] -= 1
            if exact.get(h) is was:
                del exact[h]
            affected.add(h)
        for h in new_hosts:
            claims[h] = claims.get(h, 0) + 1
            claimed_by[h] = now
            affected.add(h)
    for h in affected:
        n = claims.get(h, 0)
        if n > 1:
            return None  # several VirtualServices name it: list order decides, the general path knows it
        if n == 0:
            claims.pop(h, None)
            exact.pop(h, None)
        elif h in claimed_by:
            exact[h] = claimed_by[h]
        elif h not in exact:
            return None  # an unchanged VirtualService takes it over: the general path finds which
    memos.new.claims, memos.new.vs_hosts = claims, new_vs_hosts
    memos.new.inbound_tls = prev.inbound_tls
    return exact, [h for h in affected if exact.get(h) is not prev.vs_exact.get(h)]


def _patch_hosts(
    previous: ProxyRuntime, memos: Memos, exact: dict[str, VirtualService], dirty: list[str]
) -> ProxyRuntime | None:
    """The previous runtime with the virtual hosts of ``dirty`` service hosts recompiled (see `_patch`)."""
    prev, new = memos.prev, memos.new
    parts = prev.table
    services, rules = prev.service_map, prev.rule_map
    if parts is None or any(h not in services for h in dirty):
        return None  # a route table entry for a non-service host appears or goes
    new.services, new.rule_hosts, new.rule_sets, new.clusters = (
        prev.services,
        prev.rule_hosts,
        prev.rule_sets,
        prev.clusters,
    )
    new.tls, new.app_port, new.service_map, new.rule_map = (
        prev.tls,
        prev.app_port,
        prev.service_map,
        prev.rule_map,
    )
    new.service_entries, new.destination_rules = prev.service_entries, prev.destination_rules
    new.authorization = prev.authorization
    new.positions, new.authorities = prev.positions, prev.authorities
    declared = prev.clusters

    def ensure_declared(fqdn: str, port: int, subset: str) -> str:
        name = cluster_name(port, subset, fqdn)
        hit = declared.get(name)
        if hit is None or hit[0][0] != "service":
            raise _NeedsFullBuild(name)  # the cluster set (and its order) would change
        return name

    out = OutboundBuilder(
        RouteContext(
            services,
            rules,
            ensure_declared,
            list(memos.new.rate_limits),
            *memos.source,
            plugins=memos.new.plugins,
        ),
        memos,
        ensure_declared,
    )
    wildcard = list(prev.vs_wild)
    new.vs_exact, new.vs_wild = exact, prev.vs_wild
    new.hosts = dict(prev.hosts)
    vhosts = list(parts.vhosts)
    by_authority = parts.by_authority
    keys = sorted(
        (prev.positions[("service", h, sp.number)], ("service", h, sp.number), h)
        for h in dirty
        for sp in services[h].ports
    )
    for pos, key, fqdn in keys:
        for e in prev.hosts[key].ensured:
            ensure_declared(*e)  # raises when the old routes used an undeclared cluster: it may go now
        old_vh = vhosts[pos]
        vh = out.host("service", fqdn, key[2], vs_for(fqdn, exact, wildcard), old_vh.domains, key[2])
        if vh is not old_vh:
            if by_authority is parts.by_authority:
                by_authority = dict(by_authority)
            vhosts[pos] = vh
            for a in prev.authorities.get(pos, ()):
                by_authority[a] = vh
    new.table = OutboundParts(vhosts, by_authority, parts.wildcards, parts.catch_all)
    memos.stats["hosts_reused"] = len(new.hosts) - memos.stats["hosts_compiled"]
    memos.stats["clusters_reused"] = len(previous.clusters)
    memos.stats["clusters_built"] = 0
    memos.stats["patched"] = 1
    tls = previous.tls
    if new.inbound_tls is not prev.inbound_tls and new.inbound_tls is not None:
        # Other PeerAuthentications: the inbound policy and every auto-mTLS decision follow them.
        policy = new.inbound_tls[1]
        new.tls = {}  # copied from the previous memo above: do not write into that one
        tls = TlsPlan(memos.tls_plan_clusters(prev.service_map, previous.clusters, policy), policy)
    return ProxyRuntime(
        version=previous.version,
        outbound=RouteTable(vhosts, by_authority, parts.wildcards, parts.catch_all),
        inbound=previous.inbound,
        clusters=previous.clusters,
        namespace=previous.namespace,
        tls=tls,
        memo=new,
        telemetry=previous.telemetry,
    )


_POLICY_FILTERS = (*POLICY_FILTERS, AUTHORIZATION)


def _inbound_filters_of(runtime: ProxyRuntime | None) -> Mapping[str, object]:
    """The policy filters' configs on the inbound route of ``runtime`` (its Plugins' left out):
    RequestAuthentication, RateLimit and AuthorizationPolicy's."""
    if runtime is None:
        return {}
    for vh in runtime.inbound.virtual_hosts:
        for route in vh.routes:
            return {k: v for k, v in route.filter_config.items() if k in _POLICY_FILTERS}
    return {}


def _build_inbound(
    app_port: int | None,
    factory: ClusterFactory,
    plugins: Any = None,
    filters: Mapping[str, object] | None = None,
) -> RouteTable:
    if app_port is None:
        return RouteTable([], {})
    name = inbound_cluster_name(app_port)
    if not factory.reuse(name, ("inbound",)):  # the name says everything it is made from
        factory.make(name, name, app_port, "", [("127.0.0.1", app_port, {})], NO_POLICY, inputs=("inbound",))
    return _inbound_table(app_port, plugins, filters or {})


def _inbound_table(app_port: int | None, plugins: Any, filters: Mapping[str, object]) -> RouteTable:
    """The inbound listener's one route: everything to the app, through the workload's Plugins and its
    policy filters (RequestAuthentication, RateLimit, AuthorizationPolicy)."""
    if app_port is None:
        return RouteTable([], {})
    config = dict(plugins.filters("inbound", app_port)) if plugins else {}
    config.update(filters)
    chain = build_chain(config)
    name = inbound_cluster_name(app_port)
    route = Route(
        name="default",
        virtual_host="inbound",
        destinations=(Destination(name, "127.0.0.1", app_port, ""),),
        cum_weights=(100,),
        retry=NO_RETRY,  # Istio sets no retry policy on inbound routes
        port=app_port,
        filter_config=config,
        chain=chain,
        described={
            "name": "default",
            "match": {"prefix": "/"},
            "destinations": [{"cluster": name, "weight": 100}],
            **describe_inbound_filters(filters),
            **({"filters": chain.describe()} if chain else {}),
        },
    )
    vh = VirtualHost("inbound", app_port, [((), route)], ["*"])
    return RouteTable([vh], {}, catch_all=vh)
