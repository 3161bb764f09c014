"""ServiceEntry + DestinationRule -> services and clusters (Istio's CDS/EDS for one proxy).

Every service port gets a default cluster ``outbound|<port>||<fqdn>`` and one per DestinationRule
subset ``outbound|<port>|<subset>|<fqdn>``, with the subset's endpoints chosen by labels. The
traffic policy of a cluster is layered as Istio does: the rule's top-level policy, its
portLevelSettings for the port, then the subset's policy and the subset's portLevelSettings, each
layer replacing whole loadBalancer / connectionPool / outlierDetection / tls blocks it sets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshbus.bus.config.destination_rule import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    Subset,
    TrafficPolicy,
)
from meshbus.bus.config.hosts import host_matches, to_fqdn
from meshbus.bus.config.proxy_kinds import DestinationRule, ServiceEntry
from meshbus.proxy.build.errors import RuntimeBuildError, build_error
from meshbus.proxy.core.breaker import UNLIMITED, CircuitBreaker
from meshbus.proxy.core.cluster import Cluster, PoolSettings, TlsSettings
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.core.lb import HashPolicy, Rng
from meshbus.proxy.core.outlier import outlier_settings_from

log = logging.getLogger(__name__)

EndpointSpec = tuple[str, int, Mapping[str, str]]
"""(address, port, labels) of one cluster endpoint."""


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str
    protocol: str
    target_port: int | None


@dataclass(slots=True)
class Service:
    fqdn: str
    namespace: str
    ports: tuple[ServicePort, ...]
    # (address, port by name, labels)
    endpoints: list[tuple[str, Mapping[str, int], Mapping[str, str]]] = field(default_factory=list)
    resolution: str = "STATIC"
    resource: ServiceEntry | None = None

    def port_numbers(self) -> tuple[int, ...]:
        return tuple(p.number for p in self.ports)

    def default_port(self) -> int | None:
        """Port for an authority without one: 80 when declared, else the first declared port."""
        nums = self.port_numbers()
        if not nums:
            return None
        return 80 if 80 in nums else nums[0]


def services_of(res: ServiceEntry) -> tuple[Service, ...]:
    """The services one ServiceEntry declares, one per host; raises RuntimeBuildError on bad endpoints."""
    spec, ns = res.spec, res.metadata.namespace
    if spec.resolution == "NONE":
        raise build_error(
            res,
            ("spec", "resolution"),
            "resolution NONE (passthrough to the original destination) is not supported by "
            "meshbus-proxy; use STATIC with endpoints, or DNS",
        )
    ports = tuple(ServicePort(p.number, p.name, p.protocol, p.target_port) for p in spec.ports)
    if spec.resolution == "STATIC" and not spec.endpoints:
        log.warning("%s: resolution STATIC without endpoints; requests to it will get 503", res.ref)
    port_names = {p.name for p in ports}
    for j, ep in enumerate(spec.endpoints):
        for pname in ep.ports:
            if pname not in port_names:
                raise build_error(
                    res,
                    ("spec", "endpoints", j, "ports", pname),
                    f"no port named {pname!r} in spec.ports",
                )
        if not ep.address:
            raise build_error(res, ("spec", "endpoints", j, "address"), "endpoint address is required")
    out = []
    for host in spec.hosts:
        fqdn = to_fqdn(host, ns)
        svc = Service(fqdn=fqdn, namespace=ns, ports=ports, resolution=spec.resolution, resource=res)
        for ep in spec.endpoints:
            svc.endpoints.append((ep.address, dict(ep.ports), dict(ep.labels)))
        if not spec.endpoints and spec.resolution in ("DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"):
            svc.endpoints.append((fqdn, {}, {}))  # the host itself, resolved at connect time
        out.append(svc)
    return tuple(out)


def collect_services(
    service_entries: list[ServiceEntry], declared: Callable[[ServiceEntry], tuple[Service, ...]] = services_of
) -> dict[str, Service]:
    """fqdn -> Service; the first ServiceEntry declaring a host wins. ``declared`` may be a memo of
    `services_of` (runtime.build_runtime reuses the Services of unchanged ServiceEntries)."""
    services: dict[str, Service] = {}
    for res in service_entries:
        for svc in declared(res):
            if svc.fqdn in services:
                log.warning(
                    "%s: host %s is already declared by another ServiceEntry; ignored", res.ref, svc.fqdn
                )
                continue
            services[svc.fqdn] = svc
    return services


@dataclass(slots=True)
class RuleSet:
    """The DestinationRule(s) for one host: policy from the first, subsets merged by name."""

    resource: DestinationRule
    policy: TrafficPolicy | None
    subsets: dict[str, Subset] = field(default_factory=dict)
    subset_index: dict[str, int] = field(default_factory=dict)


def rule_host(res: DestinationRule) -> str:
    return to_fqdn(res.spec.host, res.metadata.namespace)


def rule_set(host: str, destination_rules: tuple[DestinationRule, ...]) -> RuleSet:
    """The RuleSet of one host from the DestinationRules naming it, in order."""
    first = destination_rules[0]
    rs = RuleSet(resource=first, policy=first.spec.traffic_policy)
    for res in destination_rules:
        for i, subset in enumerate(res.spec.subsets):
            if subset.name in rs.subsets:
                log.warning(
                    "%s: subset %s of %s is defined twice; the first wins", res.ref, subset.name, host
                )
                continue
            rs.subsets[subset.name] = subset
            rs.subset_index[subset.name] = i
    return rs


def collect_rules(
    destination_rules: list[DestinationRule],
    host_of: Callable[[DestinationRule], str] = rule_host,
    make: Callable[[str, tuple[DestinationRule, ...]], RuleSet] = rule_set,
) -> dict[str, RuleSet]:
    """host -> RuleSet; ``host_of`` / ``make`` may be memos of `rule_host` / `rule_set`."""
    groups: dict[str, list[DestinationRule]] = {}
    for res in destination_rules:
        groups.setdefault(host_of(res), []).append(res)
    return {host: make(host, tuple(drs)) for host, drs in groups.items()}


def rules_for(rules: Mapping[str, RuleSet], fqdn: str) -> RuleSet | None:
    """Exact host first, then the most specific wildcard rule (``*.example.com``, ``*``)."""
    rs = rules.get(fqdn)
    if rs is not None:
        return rs
    best: tuple[int, RuleSet] | None = None
    for host, cand in rules.items():
        if host.startswith("*") and host_matches(host, fqdn) and (best is None or len(host) > best[0]):
            best = (len(host), cand)
    return best[1] if best else None


@dataclass(frozen=True, slots=True)
class ClusterPolicy:
    """The traffic policy blocks one cluster gets, after Istio's layering (`effective_policy`)."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


NO_POLICY = ClusterPolicy()


def _over(base: ClusterPolicy, layer: TrafficPolicy | PortTrafficPolicy) -> ClusterPolicy:
    """``base`` with every block ``layer`` sets replaced (whole blocks, as Istio merges them)."""
    return ClusterPolicy(
        layer.load_balancer if layer.load_balancer is not None else base.load_balancer,
        layer.connection_pool if layer.connection_pool is not None else base.connection_pool,
        layer.outlier_detection if layer.outlier_detection is not None else base.outlier_detection,
        layer.tls if layer.tls is not None else base.tls,
    )


def _layer(base: ClusterPolicy, policy: TrafficPolicy | None, port: int) -> ClusterPolicy:
    if policy is None:
        return base
    out = _over(base, policy)
    for pls in policy.port_level_settings:
        if pls.port is not None and pls.port.number == port:
            return _over(out, pls)
    return out


def effective_policy(rs: RuleSet | None, port: int, subset: Subset | None) -> ClusterPolicy:
    policy = NO_POLICY
    if rs is not None:
        policy = _layer(policy, rs.policy, port)
    if subset is not None:
        policy = _layer(policy, subset.traffic_policy, port)
    return policy


def pool_settings_from(cp: ConnectionPoolSettings | None) -> PoolSettings:
    if cp is None:
        return PoolSettings()
    tcp, http = cp.tcp, cp.http
    kw: dict[str, Any] = {}
    if tcp is not None:
        if tcp.max_connections is not None:
            kw["max_connections"] = tcp.max_connections or UNLIMITED
        if tcp.connect_timeout is not None:
            kw["connect_timeout"] = tcp.connect_timeout
    if http is not None:
        for value, key in (
            (http.http1_max_pending_requests, "max_pending"),
            (http.http2_max_requests, "max_requests"),
            (http.max_retries, "max_retries"),
        ):
            if value is not None:
                kw[key] = value or UNLIMITED  # Istio: 0 means "use the default"
        if http.max_requests_per_connection is not None:
            kw["max_requests_per_connection"] = http.max_requests_per_connection
        if http.idle_timeout is not None:
            kw["idle_timeout"] = http.idle_timeout
    return PoolSettings(**kw)


def _lb_from(
    lb: LoadBalancerSettings | None, res: DestinationRule | None, path: tuple[str | int, ...]
) -> tuple[str, HashPolicy | None, int]:
    if lb is None:
        return "LEAST_REQUEST", None, 1024
    ch = lb.consistent_hash
    if ch is not None:
        ring = 1024
        rh = ch.ring_hash
        if rh is not None and rh.minimum_ring_size:
            ring = rh.minimum_ring_size
        elif ch.minimum_ring_size:  # deprecated place of the same setting
            ring = ch.minimum_ring_size
        if ch.http_header_name:
            return "RING_HASH", HashPolicy("header", ch.http_header_name.lower()), ring
        if ch.http_cookie is not None:
            return "RING_HASH", HashPolicy("cookie", ch.http_cookie.name), ring
        if ch.use_source_ip:
            return "RING_HASH", HashPolicy("source_ip"), ring
        qp = ch.http_query_parameter_name
        if qp:
            return "RING_HASH", HashPolicy("query", qp), ring
        if res is None:  # not reached: a load balancer comes from a DestinationRule, which callers pass
            raise RuntimeBuildError("meshbus: consistentHash needs a hash key")
        raise build_error(res, (*path, "consistentHash"), "consistentHash needs a hash key")
    simple = lb.simple or "UNSPECIFIED"
    # PASSTHROUGH needs the original destination address, which a sidecar without
    # traffic capture never sees; config warns and both sides fall back alike.
    if simple in ("UNSPECIFIED", "LEAST_CONN", "PASSTHROUGH"):
        simple = "LEAST_REQUEST"
    return simple, None, 1024


def _tls_from(tls: ClientTLSSettings | None) -> TlsSettings | None:
    if tls is None:
        return None
    return TlsSettings(
        mode=tls.mode,
        sni=tls.sni,
        subject_alt_names=tuple(tls.subject_alt_names),
        ca_certificates=tls.ca_certificates,
        client_certificate=tls.client_certificate,
        private_key=tls.private_key,
        insecure_skip_verify=bool(tls.insecure_skip_verify),
    )


def cluster_name(port: int, subset: str, fqdn: str) -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


class ClusterFactory:
    """Creates clusters on demand, reusing endpoint/breaker state from the previous config."""

    def __init__(
        self,
        previous: Mapping[str, Cluster] | None,
        rng: Rng | None,
        reusable: Mapping[str, tuple[tuple[object, ...], Cluster]] | None = None,
    ) -> None:
        self.clusters: dict[str, Cluster] = {}
        self._previous = previous or {}
        self._rng = rng
        # name -> (what the cluster was built from, the cluster): the previous build's, and this one's.
        self._reusable = reusable or {}
        self.built_from: dict[str, tuple[tuple[object, ...], Cluster]] = {}
        self.reused = 0
        # Changes to live objects of the running config (breaker limits, endpoint labels): made by
        # `commit` once the whole build succeeded, so a refused config leaves the running one as it was.
        self._new_labels: list[tuple[Endpoint, Mapping[str, str]]] = []
        self._new_limits: list[tuple[CircuitBreaker, CircuitBreaker]] = []  # (live one, one with new limits)

    def commit(self) -> None:
        for ep, labels in self._new_labels:
            ep.labels = labels
        for live, new in self._new_limits:
            live.set_limits(new)
        self._new_labels.clear()
        self._new_limits.clear()

    def reuse(self, name: str, inputs: tuple[object, ...]) -> bool:
        """True when ``name`` exists now, or the previous build made it from the very same ``inputs``
        (compared by identity: the same Service/RuleSet objects), in which case that cluster is taken
        as is: endpoints, breaker and balancer state all persist."""
        if name in self.clusters:
            return True
        hit = self._reusable.get(name)
        if (
            hit is None
            or len(hit[0]) != len(inputs)
            or any(a is not b for a, b in zip(hit[0], inputs, strict=True))
        ):
            return False
        self.clusters[name] = hit[1]
        self.built_from[name] = hit
        self.reused += 1
        return True

    def make(
        self,
        name: str,
        service: str,
        port: int,
        subset: str,
        endpoints: list[EndpointSpec],
        policy: ClusterPolicy,
        rule_resource: DestinationRule | None = None,
        policy_path: tuple[str | int, ...] = ("spec", "trafficPolicy"),
        inputs: tuple[object, ...] | None = None,
    ) -> Cluster:
        """``inputs``: what ``endpoints`` and ``policy`` were derived from, for `reuse` by the next build."""
        found = self.clusters.get(name)
        if found is not None:
            return found
        prev = self._previous.get(name)
        old_eps = {e.key: e for e in prev.endpoints} if prev is not None else {}
        eps: list[Endpoint] = []
        seen: set[tuple[str, int]] = set()
        for address, eport, labels in endpoints:
            if (address, eport) in seen:
                continue
            seen.add((address, eport))
            ep = old_eps.get((address, eport))
            if ep is None:
                ep = Endpoint(address, eport, labels)
            else:
                self._new_labels.append(
                    (ep, dict(labels))
                )  # same host, health and in-flight count carry over
            eps.append(ep)
        lb_policy, hash_policy, ring = _lb_from(
            policy.load_balancer, rule_resource, (*policy_path, "loadBalancer")
        )
        pool = pool_settings_from(policy.connection_pool)
        cluster = Cluster(
            name,
            service,
            port,
            subset,
            eps,
            pool=pool,
            tls=_tls_from(policy.tls),
            lb_policy=lb_policy,
            hash_policy=hash_policy,
            min_ring_size=ring,
            outlier=outlier_settings_from(policy.outlier_detection),
            rng=self._rng,
        )
        if prev is not None:
            self._new_limits.append((prev.breaker, cluster.breaker))
            cluster.breaker = prev.breaker  # live counters carry over; new limits apply on commit
        self.clusters[name] = cluster
        if inputs is not None:
            self.built_from[name] = (inputs, cluster)
        return cluster


def endpoints_for(svc: Service, port: ServicePort, labels: Mapping[str, str] | None) -> list[EndpointSpec]:
    out = []
    for address, by_name, ep_labels in svc.endpoints:
        if labels and any(ep_labels.get(k) != v for k, v in labels.items()):
            continue
        eport = by_name.get(port.name) or port.target_port or port.number
        out.append((address, eport, ep_labels))
    return out


def build_service_clusters(
    services: Mapping[str, Service], rules: Mapping[str, RuleSet], factory: ClusterFactory
) -> None:
    """Every port of every service: the default cluster and one per subset."""
    for fqdn, svc in services.items():
        rs = rules_for(rules, fqdn)
        for port in svc.ports:
            _make_port_clusters(svc, port, rs, factory, fqdn)


def _make_port_clusters(
    svc: Service, port: ServicePort, rs: RuleSet | None, factory: ClusterFactory, fqdn: str
) -> None:
    res = rs.resource if rs is not None else None
    inputs = ("service", svc, rs)
    name = cluster_name(port.number, "", fqdn)
    if not factory.reuse(name, inputs):
        factory.make(
            name,
            fqdn,
            port.number,
            "",
            endpoints_for(svc, port, None),
            effective_policy(rs, port.number, None),
            res,
            inputs=inputs,
        )
    if rs is None:
        return
    for sname, subset in rs.subsets.items():
        name = cluster_name(port.number, sname, fqdn)
        if factory.reuse(name, inputs):
            continue
        path = ("spec", "subsets", rs.subset_index[sname], "trafficPolicy")
        factory.make(
            name,
            fqdn,
            port.number,
            sname,
            endpoints_for(svc, port, subset.labels),
            effective_policy(rs, port.number, subset),
            res,
            path if subset.traffic_policy is not None else ("spec", "trafficPolicy"),
            inputs=inputs,
        )


def subset_exists(rules: Mapping[str, RuleSet], fqdn: str, subset: str) -> bool:
    rs = rules_for(rules, fqdn)
    return rs is not None and subset in rs.subsets
