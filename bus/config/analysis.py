"""Cross-resource analysis, istioctl-analyze style (codes from istio/istio pkg/config/analysis/msg).

``analyze(resources)`` looks at a whole set of schema-valid resources (a directory for
``meshctl analyze``, or the store plus an apply for the config service) and reports what no single
resource can show: references to subsets, hosts, ports, gateways and routes that do not exist,
conflicting VirtualServices, unreachable rules. Codes in the MB0xxx range are meshbus's own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from meshbus.bus.config.hosts import host_matches, looks_external, to_fqdn
from meshbus.bus.config.kubernetes import (
    KubernetesObject,
    pod_labels,
    secret_certificate,
    service_ports,
    service_selectors,
    workload_namespace,
)
from meshbus.bus.config.resources import (
    AuthorizationPolicy,
    DestinationRule,
    Gateway,
    LocalRateLimit,
    MeshConfig,
    Resource,
    ServiceEntry,
    Sidecar,
    VirtualService,
)
from meshbus.bus.config.result import Level, Validation
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.virtual_service import Destination, HTTPMatchRequest

REFERENCED_RESOURCE_NOT_FOUND = "IST0101"
CONFLICTING_MESH_GATEWAY_VS_HOSTS = "IST0109"
VS_DESTINATION_PORT_SELECTOR_REQUIRED = "IST0112"
NO_SERVER_CERT_VERIFICATION = "IST0128"
VS_UNREACHABLE_RULE = "IST0130"
VS_INEFFECTIVE_MATCH = "IST0131"
MULTIPLE_SIDECARS_WITHOUT_SELECTOR = "IST0111"
DR_SUBSET_NOT_SELECT_PODS = "IST0173"
UNKNOWN_DR_HOST = "IST0174"
CONFLICTING_GATEWAYS = "IST0145"
INVALID_GATEWAY_CREDENTIAL = "IST0161"
MULTIPLE_DESTINATION_RULES = "MB0001"
MULTIPLE_MESH_CONFIGS = "MB0002"
UNKNOWN_AUTHZ_PROVIDER = "MB0003"

Path = list[str | int]


@dataclass(slots=True)
class _Index:
    services: dict[str, list[ServiceEntry]] = field(default_factory=lambda: defaultdict(list))
    wildcard_services: list[tuple[str, ServiceEntry]] = field(default_factory=list)
    rules: dict[str, list[DestinationRule]] = field(default_factory=lambda: defaultdict(list))
    gateways: set[tuple[str, str]] = field(default_factory=set)
    route_names: set[str] = field(default_factory=set)
    vs_hosts: set[str] = field(default_factory=set)
    registry: set[str] = field(default_factory=set)
    kube_ports: dict[str, set[int]] = field(default_factory=dict)
    """Kubernetes Services in the analysed files: FQDN -> ports."""
    kube_selectors: dict[str, dict[str, str]] = field(default_factory=dict)
    kube_pods: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """namespace -> pod label sets of Pods and workload templates in the analysed files."""

    def service(self, fqdn: str) -> list[ServiceEntry]:
        found = list(self.services.get(fqdn, ()))
        found += [se for pattern, se in self.wildcard_services if host_matches(pattern, fqdn)]
        return found

    def known_host(self, fqdn: str) -> bool:
        return bool(self.service(fqdn)) or fqdn in self.registry or fqdn in self.kube_ports

    def subsets(self, fqdn: str) -> set[str] | None:
        """Subset names defined for host (None when no DestinationRule covers it)."""
        drs = [dr for host, rules in self.rules.items() if host_matches(host, fqdn) for dr in rules]
        if not drs:
            return None
        return {s.name for dr in drs for s in dr.spec.subsets}


def analyze(
    resources: Iterable[Resource],
    *,
    registry_hosts: Collection[str] = (),
    kubernetes: Iterable[KubernetesObject] = (),
) -> Validation:
    """Every cross-resource finding for ``resources``.

    ``registry_hosts``: FQDNs of services known from elsewhere (workload registry in mesh mode), so
    hosts that no ServiceEntry declares are not reported when the registry knows them.
    ``kubernetes``: the Kubernetes documents of the analysed files; their Services are hosts (with
    ports) and their Pods and workload templates are what DestinationRule subsets must select, as
    istiod would see them in the cluster.
    """
    items = list(resources)
    index = _build_index(items, registry_hosts)
    kube = list(kubernetes)
    index.kube_ports = service_ports(kube)
    index.kube_selectors = service_selectors(kube)
    index.kube_pods = pod_labels(kube)
    validation = Validation()
    vs_by_host: dict[str, list[tuple[VirtualService, int]]] = defaultdict(list)
    for res in items:
        f = Findings(res, validation)
        if isinstance(res, VirtualService):
            _virtual_service(f, res, index)
            if not res.spec.gateways or "mesh" in res.spec.gateways:
                for i, host in enumerate(res.spec.hosts):
                    vs_by_host[to_fqdn(host, res.namespace)].append((res, i))
        elif isinstance(res, DestinationRule):
            _destination_rule(f, res, index)
        elif isinstance(res, LocalRateLimit):
            _route_refs(f, res, index)
    for host, owners in vs_by_host.items():
        if len(owners) > 1:
            names = ", ".join(f"{vs.namespace}/{vs.name}" for vs, _ in owners)
            for vs, i in owners:
                Findings(vs, validation).analysis(
                    Level.ERROR,
                    CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                    ["spec", "hosts", i],
                    f"The VirtualServices {names} associated with mesh gateway define the same host {host} "
                    "which can lead to undefined behavior. This can be fixed by merging the conflicting "
                    "VirtualServices into a single resource.",
                )
    _sidecars(items, validation)
    _mesh_config(items, validation)
    gateways = [r for r in items if isinstance(r, Gateway)]
    _conflicting_gateways(gateways, validation)
    _gateway_credentials(gateways, kube, validation)
    for host, rules in index.rules.items():
        if len(rules) > 1:
            names = ", ".join(f"{dr.namespace}/{dr.name}" for dr in rules)
            for dr in rules:
                Findings(dr, validation).analysis(
                    Level.WARNING,
                    MULTIPLE_DESTINATION_RULES,
                    ["spec", "host"],
                    f"DestinationRules {names} all target host {host}; define one DestinationRule per host "
                    "(which one applies is not defined)",
                )
    return validation


def _mesh_config(items: Sequence[Resource], validation: Validation) -> None:
    """MB0002: a mesh has one MeshConfig. MB0003: a CUSTOM policy naming a provider it cannot use."""
    meshes = [r for r in items if isinstance(r, MeshConfig)]
    if len(meshes) > 1:
        names = ", ".join(sorted(f"{m.namespace}/{m.name}" for m in meshes))
        for m in meshes:
            Findings(m, validation).analysis(
                Level.ERROR,
                MULTIPLE_MESH_CONFIGS,
                ["metadata", "name"],
                f"a mesh has one MeshConfig, and these would be {len(meshes)}: {names}; merge them into one",
            )
    providers = {p.name: p for m in meshes[:1] for p in m.spec.extension_providers}
    for res in items:
        if (
            not isinstance(res, AuthorizationPolicy)
            or res.spec.action != "CUSTOM"
            or res.spec.provider is None
        ):
            continue
        name = res.spec.provider.name
        p = providers.get(name)
        if p is None:
            why = f"no MeshConfig defines an extension provider {name!r}"
        elif p.envoy_ext_authz_http is None and p.envoy_ext_authz_grpc is None and p.meshbus_authz is None:
            why = f"extension provider {name!r} is not an authorizer"
        else:
            continue
        Findings(res, validation).analysis(
            Level.WARNING,
            UNKNOWN_AUTHZ_PROVIDER,
            ["spec", "provider", "name"],
            f"{why}: the proxies deny every request this CUSTOM policy's rules match, as Istio does",
        )


def _conflicting_gateways(gateways: Sequence[Gateway], validation: Validation) -> None:
    """IST0145: two Gateways on the same workloads (same selector) and port that claim the same host."""
    claims: dict[tuple[tuple[tuple[str, str], ...], int], list[tuple[Gateway, set[tuple[str, str]]]]] = (
        defaultdict(list)
    )
    for gw in gateways:
        selector = tuple(sorted(gw.spec.selector.items()))
        for server in gw.spec.servers:
            claims[(selector, server.port.number)].append(
                (gw, {(h, server.bind or "") for h in server.hosts})
            )
    for (selector, port), owners in claims.items():
        for gw, hosts in owners:
            others = sorted(
                {
                    f"{o.namespace}/{o.name}"
                    for o, other_hosts in owners
                    if o.key != gw.key and hosts & other_hosts
                }
            )
            if others:
                sel = ",".join(f"{k}={v}" for k, v in selector)
                found = sorted(h for h, _ in hosts)
                Findings(gw, validation).analysis(
                    Level.ERROR,
                    CONFLICTING_GATEWAYS,
                    ["spec", "servers"],
                    f"Conflict with gateways {','.join(others)} (workload selector {sel}, port {port}, "
                    f"hosts {','.join(found)}).",
                )


def _gateway_credentials(
    gateways: Sequence[Gateway], kube: Sequence[KubernetesObject], validation: Validation
) -> None:
    """IST0161: a credentialName Secret that holds no valid certificate. Judged only where the analysed files
    hold both the gateway's workload (its namespace is where Istio looks for the Secret) and the Secret:
    what is not in the files may well be in the cluster."""
    for gw in gateways:
        namespace = workload_namespace(kube, gw.spec.selector) if gw.spec.selector else None
        if namespace is None:
            continue
        for i, server in enumerate(gw.spec.servers):
            name = server.tls.credential_name if server.tls is not None else None
            cert = secret_certificate(kube, namespace, name) if name else None
            if cert is not None and not _valid_certificate(cert):
                Findings(gw, validation).analysis(
                    Level.ERROR,
                    INVALID_GATEWAY_CREDENTIAL,
                    ["spec", "servers", i, "tls", "credentialName"],
                    f"The credential referenced by the Gateway {gw.name} in namespace {namespace} is invalid, "
                    "which can cause the traffic not to work as expected.",
                )


def _valid_certificate(pem: bytes) -> bool:
    try:
        return bool(x509.load_pem_x509_certificates(pem))
    except ValueError:
        return False


def _sidecars(items: Sequence[Resource], validation: Validation) -> None:
    by_ns: dict[str, list[Sidecar]] = defaultdict(list)
    for res in items:
        if isinstance(res, Sidecar) and res.spec.workload_selector is None:
            by_ns[res.namespace].append(res)
    for ns, sidecars in by_ns.items():
        if len(sidecars) > 1:
            names = "[" + " ".join(sorted(f"{sc.namespace}/{sc.name}" for sc in sidecars)) + "]"
            for sc in sidecars:
                Findings(sc, validation).analysis(
                    Level.ERROR,
                    MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                    ["spec"],
                    f'The Sidecars {names} in namespace "{ns}" have no workload selector, which can lead to '
                    "undefined behavior.",
                )


def _build_index(items: Sequence[Resource], registry_hosts: Collection[str]) -> _Index:
    index = _Index(registry={h.lower() for h in registry_hosts})
    for res in items:
        if isinstance(res, ServiceEntry):
            for host in res.spec.hosts:
                fqdn = to_fqdn(host, res.namespace)
                if fqdn.startswith("*"):
                    index.wildcard_services.append((fqdn, res))
                else:
                    index.services[fqdn].append(res)
        elif isinstance(res, DestinationRule):
            index.rules[to_fqdn(res.spec.host, res.namespace)].append(res)
        elif isinstance(res, Gateway):
            index.gateways.add((res.namespace, res.name))
        elif isinstance(res, VirtualService):
            index.route_names.update(r.name for r in res.spec.http if r.name)
            index.vs_hosts.update(to_fqdn(h, res.namespace) for h in res.spec.hosts)
    return index


def _virtual_service(f: Findings, vs: VirtualService, index: _Index) -> None:
    for i, gw in enumerate(vs.spec.gateways):
        if gw == "mesh":
            continue
        ns, _, name = gw.rpartition("/")
        if (ns or vs.namespace, name) not in index.gateways:
            f.analysis(
                Level.ERROR,
                REFERENCED_RESOURCE_NOT_FOUND,
                ["spec", "gateways", i],
                f'Referenced gateway not found: "{gw}"',
            )
    catch_all: int | None = None
    for i, route in enumerate(vs.spec.http):
        path: Path = ["spec", "http", i]
        if catch_all is not None:
            f.analysis(
                Level.WARNING,
                VS_UNREACHABLE_RULE,
                path,
                f"VirtualService rule {_rule_name(vs, i)} not used (rule {_rule_name(vs, catch_all)} has no match "
                "and catches everything; only the last rule can have no matches).",
            )
        elif not route.match:
            catch_all = i
        else:
            _ineffective_matches(f, vs, i)
        for j, rd in enumerate(route.route):
            _destination(f, vs, [*path, "route", j, "destination"], rd.destination, index)
        if route.mirror is not None:
            _destination(f, vs, [*path, "mirror"], route.mirror, index)
        for j, m in enumerate(route.mirrors):
            _destination(f, vs, [*path, "mirrors", j, "destination"], m.destination, index)
    for i, tcp in enumerate(vs.spec.tcp or ()):
        for j, l4 in enumerate(tcp.route):
            _destination(f, vs, ["spec", "tcp", i, "route", j, "destination"], l4.destination, index)
    for i, tls in enumerate(vs.spec.tls or ()):
        for j, l4 in enumerate(tls.route):
            _destination(f, vs, ["spec", "tls", i, "route", j, "destination"], l4.destination, index)


def _rule_name(vs: VirtualService, i: int) -> str:
    return vs.spec.http[i].name or f"#{i}"


def _ineffective_matches(f: Findings, vs: VirtualService, i: int) -> None:
    """A match block identical to one in an earlier rule never wins (istioctl's IST0131)."""
    for k, match in enumerate(vs.spec.http[i].match):
        earlier = next(
            (j for j in range(i) if any(_same_match(match, m) for m in vs.spec.http[j].match)),
            None,
        )
        if earlier is not None:
            f.analysis(
                Level.INFO,
                VS_INEFFECTIVE_MATCH,
                ["spec", "http", i, "match", k],
                f"VirtualService rule {_rule_name(vs, i)} match #{k} is not used "
                f"(duplicate/overlapping match in rule {_rule_name(vs, earlier)}).",
            )


def _same_match(a: HTTPMatchRequest, b: HTTPMatchRequest) -> bool:
    # The match name is only a label; everything else decides what matches.
    return a.model_copy(update={"name": ""}) == b.model_copy(update={"name": ""})


def _destination(f: Findings, vs: VirtualService, path: Path, dest: Destination, index: _Index) -> None:
    fqdn = to_fqdn(dest.host, vs.namespace)
    services = index.service(fqdn)
    if not index.known_host(fqdn):
        level = Level.WARNING if looks_external(fqdn) else Level.ERROR
        f.analysis(
            level, REFERENCED_RESOURCE_NOT_FOUND, [*path, "host"], f'Referenced host not found: "{dest.host}"'
        )
    if dest.subset:
        subsets = index.subsets(fqdn)
        if subsets is None or dest.subset not in subsets:
            f.analysis(
                Level.ERROR,
                REFERENCED_RESOURCE_NOT_FOUND,
                [*path, "subset"],
                f'Referenced subset not found: "{dest.subset}"',
            )
    ports = {p.number for se in services for p in se.spec.ports} | index.kube_ports.get(fqdn, set())
    if dest.port is not None and dest.port.number is not None:
        if (services or fqdn in index.kube_ports) and dest.port.number not in ports:
            f.analysis(
                Level.ERROR,
                REFERENCED_RESOURCE_NOT_FOUND,
                [*path, "port"],
                f'Referenced port not found: "{dest.port.number}" (host {dest.host} has {sorted(ports)})',
            )
    elif len(ports) > 1:
        f.analysis(
            Level.ERROR,
            VS_DESTINATION_PORT_SELECTOR_REQUIRED,
            path,
            f'This VirtualService routes to a service "{dest.host}" that exposes multiple ports '
            f"{sorted(ports)}. Specifying a port in the destination is required to disambiguate.",
        )


def _destination_rule(f: Findings, dr: DestinationRule, index: _Index) -> None:
    fqdn = to_fqdn(dr.spec.host, dr.namespace)
    services = index.service(fqdn) if not fqdn.startswith("*") else []
    if not fqdn.startswith("*") and not index.known_host(fqdn):
        f.analysis(
            Level.WARNING,
            UNKNOWN_DR_HOST,
            ["spec", "host"],
            f"DestinationRule for non-existent service {dr.spec.host} has no effect",
        )
    endpoint_labels = [ep.labels for se in services for ep in se.spec.endpoints]
    if endpoint_labels and fqdn not in index.registry:
        for i, subset in enumerate(dr.spec.subsets):
            if not any(
                all(labels.get(k) == v for k, v in subset.labels.items()) for labels in endpoint_labels
            ):
                f.analysis(
                    Level.WARNING,
                    DR_SUBSET_NOT_SELECT_PODS,
                    ["spec", "subsets", i, "labels"],
                    f'The Subset "{subset.name}" defined in the DestinationRule does not select any endpoint',
                )
    selector = index.kube_selectors.get(fqdn)
    pods = index.kube_pods.get(fqdn.split(".")[1] if fqdn.count(".") >= 2 else dr.namespace, [])
    if selector is not None and pods:
        for i, subset in enumerate(dr.spec.subsets):
            wanted = {**selector, **subset.labels}
            if not any(all(labels.get(k) == v for k, v in wanted.items()) for labels in pods):
                f.analysis(
                    Level.ERROR,
                    DR_SUBSET_NOT_SELECT_PODS,
                    ["spec", "subsets", i, "labels"],
                    f'The Subset "{subset.name}" defined in the DestinationRule does not select any pods',
                )
    tp = dr.spec.traffic_policy
    if tp is not None and tp.tls is not None and tp.tls.mode in ("SIMPLE", "MUTUAL"):
        if not tp.tls.ca_certificates and not tp.tls.credential_name and not tp.tls.insecure_skip_verify:
            f.analysis(
                Level.WARNING,
                NO_SERVER_CERT_VERIFICATION,
                ["spec", "trafficPolicy", "tls"],
                f"DestinationRule {dr.name} in namespace {dr.namespace} has TLS mode set to {tp.tls.mode} "
                f"but no caCertificates are set to validate server identity for host: {dr.spec.host}",
            )


def _route_refs(f: Findings, res: LocalRateLimit, index: _Index) -> None:
    for i, name in enumerate(res.spec.routes):
        if name not in index.route_names:
            f.analysis(
                Level.ERROR,
                REFERENCED_RESOURCE_NOT_FOUND,
                ["spec", "routes", i],
                f'Referenced route not found: "{name}"',
            )
    for i, host in enumerate(res.spec.hosts):
        fqdn = to_fqdn(host, res.namespace)
        if not any(host_matches(fqdn, h) or host_matches(h, fqdn) for h in index.vs_hosts):
            f.analysis(
                Level.WARNING,
                REFERENCED_RESOURCE_NOT_FOUND,
                ["spec", "hosts", i],
                f'Referenced host not found: "{host}" (no VirtualService routes it)',
            )
