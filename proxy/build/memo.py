"""What one runtime build compiled, keyed by what it was compiled from, for the next build (sans-IO).

A pushed snapshot usually changes one resource; rebuilding the whole mesh for it costs time
proportional to the mesh. `build_runtime(previous=...)` instead reuses every compiled piece whose
inputs are unchanged: the Services of a ServiceEntry, the RuleSet of a host, a cluster, a virtual
host's routes, a cluster's TLS decision. Inputs are compared by *identity*: resources are frozen
models, and the proxy agent's `ResourceCache` hands out the same object for a resource whose
content digest did not change, so "same object" means "same content" without hashing anything.
Callers that parse every resource afresh (file reloads) simply get no reuse, never a wrong one.
The memo keeps only the last build's pieces (and so references to the resources they came from).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshbus.bus.config.proxy_kinds import (
    AuthorizationPolicy,
    DestinationRule,
    LocalRateLimit,
    MeshConfig,
    PeerAuthentication,
    Resource,
    ServiceEntry,
    VirtualService,
)
from meshbus.proxy.build.cluster_builder import RuleSet, Service, rule_host, rule_set, services_of
from meshbus.proxy.build.route_builder import Entry
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.lb import Rng
from meshbus.proxy.core.routing import VirtualHost
from meshbus.proxy.tls.policy import ROOT_NAMESPACE, ClusterTls, InboundPolicy, cluster_tls, inbound_policy


def same(a: Sequence[object], b: Sequence[object]) -> bool:
    """Element-wise identity."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@dataclass(slots=True)
class ByKind:
    """The resources a build reads, by kind, in the order given (the proxy has no use for other kinds)."""

    service_entries: list[ServiceEntry] = field(default_factory=list)
    virtual_services: list[VirtualService] = field(default_factory=list)
    destination_rules: list[DestinationRule] = field(default_factory=list)
    rate_limits: list[LocalRateLimit] = field(default_factory=list)
    peer_authentications: list[PeerAuthentication] = field(default_factory=list)
    authorization: list[AuthorizationPolicy | MeshConfig] = field(default_factory=list)
    """AuthorizationPolicies and the MeshConfig: what the inbound route's authorization is built from."""

    @classmethod
    def of(cls, resources: Sequence[Resource]) -> ByKind:
        out = cls()
        for res in resources:
            if isinstance(res, VirtualService):
                out.virtual_services.append(res)
            elif isinstance(res, ServiceEntry):
                out.service_entries.append(res)
            elif isinstance(res, DestinationRule):
                out.destination_rules.append(res)
            elif isinstance(res, LocalRateLimit):
                out.rate_limits.append(res)
            elif isinstance(res, PeerAuthentication):
                out.peer_authentications.append(res)
            elif isinstance(res, AuthorizationPolicy | MeshConfig):
                out.authorization.append(res)
        return out


@dataclass(frozen=True, slots=True)
class CompiledHost:
    """One virtual host and what compiling it looked at."""

    vs: VirtualService | None
    """The VirtualService it was compiled from (None: Istio's default route)."""
    looked_up: tuple[tuple[str, Service | None, RuleSet | None], ...]
    """Every host the routes resolved, with the Service and RuleSet it resolved to then."""
    ensured: tuple[tuple[str, int, str], ...]
    """Clusters (fqdn, port, subset) the routes use, in the order they were asked for."""
    entries: tuple[Entry, ...]
    vh: VirtualHost


@dataclass(frozen=True, slots=True)
class OutboundParts:
    """What the outbound RouteTable was made of (it keeps these objects; nobody mutates them)."""

    vhosts: list[VirtualHost]
    by_authority: dict[str, VirtualHost]
    wildcards: list[tuple[str, VirtualHost]]
    catch_all: VirtualHost | None


@dataclass(slots=True)
class BuildMemo:
    namespace: str = "default"
    rng: Rng | None = None
    rate_limits: tuple[LocalRateLimit, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # the workload's, sorted (sourceLabels matches depend on them)
    plugins: Any = None
    """The PluginSet (proxy/filters/plugins) whose filters the routes carry; the same object while
    no Plugin changed."""
    services: dict[int, tuple[ServiceEntry, tuple[Service, ...]]] = field(default_factory=dict)
    """id(ServiceEntry) -> (it, the Services it declares)."""
    rule_hosts: dict[int, tuple[DestinationRule, str]] = field(default_factory=dict)
    """id(DestinationRule) -> (it, the host it names)."""
    rule_sets: dict[str, tuple[tuple[DestinationRule, ...], RuleSet]] = field(default_factory=dict)
    """host -> (its DestinationRules, the RuleSet made from them)."""
    vs_hosts: dict[int, tuple[VirtualService, tuple[str, ...] | None]] = field(default_factory=dict)
    """id(VirtualService) -> (it, its hosts as FQDNs; None when it is not for sidecars)."""
    clusters: dict[str, tuple[tuple[object, ...], Cluster]] = field(default_factory=dict)
    """cluster name -> (what it was built from, compared by identity: ClusterFactory.reuse, it)."""
    hosts: dict[tuple[str, str, int | None], CompiledHost] = field(default_factory=dict)
    """(slot, host, port) -> compiled virtual host; slot: service / host / wildcard."""
    tls: dict[str, tuple[Cluster, Service | None, InboundPolicy, ClusterTls]] = field(default_factory=dict)
    inbound_tls: tuple[tuple[PeerAuthentication, ...], InboundPolicy] | None = None
    authorization: tuple[AuthorizationPolicy | MeshConfig, ...] = ()
    """What the inbound route's authorization was built from (ByKind.authorization)."""
    # For patching the previous runtime in place of a build (runtime._patch): its inputs and tables.
    app_port: int | None = None
    service_entries: tuple[ServiceEntry, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    service_map: Mapping[str, Service] = field(default_factory=dict)
    rule_map: Mapping[str, RuleSet] = field(default_factory=dict)
    resources: tuple[Resource, ...] = ()
    """The resources the build was given, in order."""
    claims: Mapping[str, int] = field(default_factory=dict)
    """exact host -> how many (sidecar) VirtualService host entries name it."""
    vs_exact: Mapping[str, VirtualService] = field(default_factory=dict)
    vs_wild: tuple[tuple[str, VirtualService], ...] = ()
    table: OutboundParts | None = None
    positions: Mapping[tuple[str, str, int | None], int] = field(default_factory=dict)
    """(slot, host, port) -> index of that virtual host in ``table.vhosts``."""
    authorities: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    """index in ``table.vhosts`` -> the ``table.by_authority`` keys that route to it."""
    stats: dict[str, int] = field(default_factory=dict)
    """What this build reused vs compiled (tests and benchmarks read it)."""

    def without_inputs(self) -> BuildMemo:
        """This memo without what it was compiled from, for a caller that never hands the same
        resource objects twice (a file reload parses every resource afresh, so no identity lookup
        here could hit): the inputs it would keep alive are the parsed resources themselves, and
        with them ~38 KB a service. Kept: the PluginSet that went live and the stats."""
        return BuildMemo(self.namespace, self.rng, (), self.labels, self.plugins, stats=self.stats)


class Memos:
    """The previous build's memo (read) and this build's (written), with the lookups that use them."""

    def __init__(
        self,
        prev: BuildMemo | None,
        namespace: str,
        rng: Rng | None,
        rate_limits: tuple[LocalRateLimit, ...],
        labels: tuple[tuple[str, str], ...] = (),
        plugins: Any = None,
    ) -> None:
        self.new = BuildMemo(namespace, rng, rate_limits, labels, plugins)
        if prev is not None and (prev.namespace != namespace or prev.rng is not rng or prev.labels != labels):
            prev = None  # domains, balancers and sourceLabels matches depend on these: nothing is reusable
        # RouteContext's trailing arguments: the workload routes are compiled for.
        self.source: tuple[str, dict[str, str]] = (namespace, dict(labels))
        self.prev = prev or BuildMemo()
        # Rate limits and plugins are compiled into every route: another set means no route is reusable.
        self.routes_reusable = (
            prev is not None and same(prev.rate_limits, rate_limits) and prev.plugins is plugins
        )
        self.stats = self.new.stats
        for k in ("hosts_reused", "hosts_compiled", "tls_reused"):
            self.stats[k] = 0

    def services_of(self, res: ServiceEntry) -> tuple[Service, ...]:
        hit = self.prev.services.get(id(res))
        if hit is None or hit[0] is not res:
            hit = (res, services_of(res))
        self.new.services[id(res)] = hit
        return hit[1]

    def rule_host(self, res: DestinationRule) -> str:
        hit = self.prev.rule_hosts.get(id(res))
        if hit is None or hit[0] is not res:
            hit = (res, rule_host(res))
        self.new.rule_hosts[id(res)] = hit
        return hit[1]

    def rule_set(self, host: str, drs: tuple[DestinationRule, ...]) -> RuleSet:
        hit = self.prev.rule_sets.get(host)
        if hit is None or not same(hit[0], drs):
            hit = (drs, rule_set(host, drs))
        self.new.rule_sets[host] = hit
        return hit[1]

    def vs_hosts(
        self, vs: VirtualService, compute: Callable[[VirtualService], tuple[str, ...] | None]
    ) -> tuple[str, ...] | None:
        hit = self.prev.vs_hosts.get(id(vs))
        if hit is None or hit[0] is not vs:
            hit = (vs, compute(vs))
        self.new.vs_hosts[id(vs)] = hit
        return hit[1]

    def compiled_host(
        self,
        key: tuple[str, str, int | None],
        vs: VirtualService | None,
        current: Callable[[str], tuple[Service | None, RuleSet | None]],
    ) -> CompiledHost | None:
        """The previous build's virtual host for ``key`` if every input is unchanged."""
        if not self.routes_reusable:
            return None
        hit = self.prev.hosts.get(key)
        if hit is None or hit.vs is not vs:
            return None
        for host, svc, rs in hit.looked_up:
            now_svc, now_rs = current(host)
            if now_svc is not svc or now_rs is not rs:
                return None
        return hit

    def keep_host(self, key: tuple[str, str, int | None], compiled: CompiledHost, reused: bool) -> None:
        self.new.hosts[key] = compiled
        self.stats["hosts_reused" if reused else "hosts_compiled"] += 1

    def tls_plan_clusters(
        self, services: Mapping[str, Service], clusters: Mapping[str, Cluster], inbound: InboundPolicy
    ) -> dict[str, ClusterTls]:
        """tls.policy.cluster_tls for every outbound cluster, reusing the decisions of unchanged clusters
        (auto-mTLS reads the PeerAuthentications, so another ``inbound`` decides afresh)."""
        out: dict[str, ClusterTls] = {}
        prev, new = self.prev.tls, self.new.tls
        for name, cluster in clusters.items():
            if not name.startswith("outbound|"):
                continue  # inbound|<port>|| is the local app: always plaintext on loopback
            svc = services.get(cluster.service)
            hit = prev.get(name)
            if hit is not None and hit[0] is cluster and hit[1] is svc and hit[2] is inbound:
                self.stats["tls_reused"] += 1
            else:
                hit = (cluster, svc, inbound, cluster_tls(cluster, svc, inbound))
            new[name] = hit
            out[name] = hit[3]
        return out

    def inbound_policy(
        self, peer_authentications: tuple[PeerAuthentication, ...], root_namespace: str = ROOT_NAMESPACE
    ) -> InboundPolicy:
        """``root_namespace``: MeshConfig's, where a PeerAuthentication is mesh-wide."""
        hit = self.prev.inbound_tls
        if hit is None or not same(hit[0], peer_authentications) or hit[1].root_namespace != root_namespace:
            hit = (peer_authentications, inbound_policy(peer_authentications, root_namespace))
        self.new.inbound_tls = hit
        return hit[1]
