"""ServiceEntry + DestinationRule -> services and clusters (Istio's CDS/EDS for one proxy).

Every service port gets a default cluster ``outbound|<port>||<fqdn>`` and one per DestinationRule
subset ``outbound|<port>|<subset>|<fqdn>``, with the subset's endpoints chosen by labels. The
traffic policy of a cluster is layered as Istio does: the rule's top-level policy, its
portLevelSettings for the port, then the subset's policy and the subset's portLevelSettings, each
layer replacing whole loadBalancer / connectionPool / outlierDetection / tls blocks it sets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshbus.proxy.breaker import UNLIMITED
from meshbus.proxy.build_errors import build_error
from meshbus.proxy.cluster import Cluster, PoolSettings, TlsSettings
from meshbus.proxy.endpoint import Endpoint
from meshbus.proxy.hosts import host_matches, resolve_host
from meshbus.proxy.lb import HashPolicy, Rng
from meshbus.proxy.outlier import outlier_settings_from

log = logging.getLogger(__name__)

_POLICY_BLOCKS = ("load_balancer", "connection_pool", "outlier_detection", "tls")


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
    resource: Any = None

    def port_numbers(self) -> tuple[int, ...]:
        return tuple(p.number for p in self.ports)

    def default_port(self) -> int | None:
        """Port for an authority without one: 80 when declared, else the first declared port."""
        nums = self.port_numbers()
        if not nums:
            return None
        return 80 if 80 in nums else nums[0]


def collect_services(service_entries: list[Any]) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for res in service_entries:
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
        for j, ep in enumerate(spec.endpoints):
            for pname in ep.ports:
                if pname not in {p.name for p in ports}:
                    raise build_error(
                        res,
                        ("spec", "endpoints", j, "ports", pname),
                        f"no port named {pname!r} in spec.ports",
                    )
            if not ep.address:
                raise build_error(res, ("spec", "endpoints", j, "address"), "endpoint address is required")
        for host in spec.hosts:
            fqdn = resolve_host(host, ns)
            if fqdn in services:
                log.warning("%s: host %s is already declared by another ServiceEntry; ignored", res.ref, fqdn)
                continue
            svc = Service(fqdn=fqdn, namespace=ns, ports=ports, resolution=spec.resolution, resource=res)
            for ep in spec.endpoints:
                svc.endpoints.append((ep.address, dict(ep.ports), dict(ep.labels)))
            if not spec.endpoints and spec.resolution in ("DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"):
                svc.endpoints.append((fqdn, {}, {}))  # the host itself, resolved at connect time
            services[fqdn] = svc
    return services


@dataclass(slots=True)
class RuleSet:
    """The DestinationRule(s) for one host: policy from the first, subsets merged by name."""

    resource: Any
    policy: Any
    subsets: dict[str, Any] = field(default_factory=dict)  # name -> Subset model
    subset_index: dict[str, int] = field(default_factory=dict)


def collect_rules(destination_rules: list[Any]) -> dict[str, RuleSet]:
    rules: dict[str, RuleSet] = {}
    for res in destination_rules:
        host = resolve_host(res.spec.host, res.metadata.namespace)
        rs = rules.get(host)
        if rs is None:
            rs = rules[host] = RuleSet(resource=res, policy=res.spec.traffic_policy)
        for i, subset in enumerate(res.spec.subsets):
            if subset.name in rs.subsets:
                log.warning(
                    "%s: subset %s of %s is defined twice; the first wins", res.ref, subset.name, host
                )
                continue
            rs.subsets[subset.name] = subset
            rs.subset_index[subset.name] = i
    return rules


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


def _layer(blocks: dict[str, Any], policy: Any, port: int) -> None:
    if policy is None:
        return
    for name in _POLICY_BLOCKS:
        v = getattr(policy, name, None)
        if v is not None:
            blocks[name] = v
    for pls in getattr(policy, "port_level_settings", ()) or ():
        if pls.port is not None and pls.port.number == port:
            for name in _POLICY_BLOCKS:
                v = getattr(pls, name, None)
                if v is not None:
                    blocks[name] = v
            break


def effective_policy(rs: RuleSet | None, port: int, subset: Any | None) -> dict[str, Any]:
    blocks: dict[str, Any] = {}
    if rs is not None:
        _layer(blocks, rs.policy, port)
    if subset is not None:
        _layer(blocks, subset.traffic_policy, port)
    return blocks


def pool_settings_from(cp: Any | None) -> PoolSettings:
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
        for attr, key in (
            ("http1_max_pending_requests", "max_pending"),
            ("http2_max_requests", "max_requests"),
            ("max_retries", "max_retries"),
        ):
            v = getattr(http, attr)
            if v is not None:
                kw[key] = v or UNLIMITED  # Istio: 0 means "use the default"
        if http.max_requests_per_connection is not None:
            kw["max_requests_per_connection"] = http.max_requests_per_connection
        if http.idle_timeout is not None:
            kw["idle_timeout"] = http.idle_timeout
    return PoolSettings(**kw)


def _lb_from(lb: Any | None, res: Any, path: tuple[str | int, ...]) -> tuple[str, HashPolicy | None, int]:
    if lb is None:
        return "LEAST_REQUEST", None, 1024
    ch = lb.consistent_hash
    if ch is not None:
        ring = 1024
        rh = getattr(ch, "ring_hash", None)
        if rh is not None and rh.minimum_ring_size:
            ring = rh.minimum_ring_size
        elif getattr(ch, "minimum_ring_size", None):
            ring = ch.minimum_ring_size
        if ch.http_header_name:
            return "RING_HASH", HashPolicy("header", ch.http_header_name.lower()), ring
        if ch.http_cookie is not None:
            return "RING_HASH", HashPolicy("cookie", ch.http_cookie.name), ring
        if ch.use_source_ip:
            return "RING_HASH", HashPolicy("source_ip"), ring
        qp = getattr(ch, "http_query_parameter_name", None)
        if qp:
            return "RING_HASH", HashPolicy("query", qp), ring
        raise build_error(res, (*path, "consistentHash"), "consistentHash needs a hash key")
    simple = lb.simple or "UNSPECIFIED"
    # PASSTHROUGH needs the original destination address, which a sidecar without
    # traffic capture never sees; config warns and both sides fall back alike.
    if simple in ("UNSPECIFIED", "LEAST_CONN", "PASSTHROUGH"):
        simple = "LEAST_REQUEST"
    return simple, None, 1024


def _tls_from(tls: Any | None) -> TlsSettings | None:
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

    def __init__(self, previous: Mapping[str, Cluster] | None, rng: Rng | None) -> None:
        self.clusters: dict[str, Cluster] = {}
        self._previous = previous or {}
        self._rng = rng

    def make(
        self,
        name: str,
        service: str,
        port: int,
        subset: str,
        endpoints: list[tuple[str, int, Mapping[str, str]]],
        policy: Mapping[str, Any],
        rule_resource: Any = None,
        policy_path: tuple[str | int, ...] = ("spec", "trafficPolicy"),
    ) -> Cluster:
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
                ep.labels = dict(labels)  # same host, health and in-flight count carry over
            eps.append(ep)
        lb_policy, hash_policy, ring = _lb_from(
            policy.get("load_balancer"), rule_resource, (*policy_path, "loadBalancer")
        )
        pool = pool_settings_from(policy.get("connection_pool"))
        cluster = Cluster(
            name,
            service,
            port,
            subset,
            eps,
            pool=pool,
            tls=_tls_from(policy.get("tls")),
            lb_policy=lb_policy,
            hash_policy=hash_policy,
            min_ring_size=ring,
            outlier=outlier_settings_from(policy.get("outlier_detection")),
            rng=self._rng,
        )
        if prev is not None:
            prev.breaker.set_limits(cluster.breaker)
            cluster.breaker = prev.breaker  # live counters carry over; new limits apply at once
        self.clusters[name] = cluster
        return cluster


def endpoints_for(
    svc: Service, port: ServicePort, labels: Mapping[str, str] | None
) -> list[tuple[str, int, Any]]:
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
    factory.make(
        cluster_name(port.number, "", fqdn),
        fqdn,
        port.number,
        "",
        endpoints_for(svc, port, None),
        effective_policy(rs, port.number, None),
        res,
    )
    if rs is None:
        return
    for sname, subset in rs.subsets.items():
        path = ("spec", "subsets", rs.subset_index[sname], "trafficPolicy")
        factory.make(
            cluster_name(port.number, sname, fqdn),
            fqdn,
            port.number,
            sname,
            endpoints_for(svc, port, subset.labels),
            effective_policy(rs, port.number, subset),
            res,
            path if subset.traffic_policy is not None else ("spec", "trafficPolicy"),
        )


def subset_exists(rules: Mapping[str, RuleSet], fqdn: str, subset: str) -> bool:
    rs = rules_for(rules, fqdn)
    return rs is not None and subset in rs.subsets
