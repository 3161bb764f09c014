"""MeshModel: the immutable view of stored config that snapshots are generated from (sans-IO).

Each stored resource becomes a `ConfigEntry` once, when it changes. The entry holds it in the two
forms discovery needs: ``value``, the stored JSON form (camelCase), which is what snapshots carry to
proxies (packed once) and what digests hash; and ``resource``, the same validated into the typed
models of meshbus.bus.config, the one form the proxy builds from too (it validates the snapshot's
values with the same models: `meshbus.bus.schemas.config.manifest_resource`). Everything discovery
reads from config it reads from ``resource``, never from the dict. The entry's other fields are a
projection of the model, computed once (what scoping asks for each push, kept as sets): its digest,
the hosts it is about, the hosts its routes send to, and its workload selector.
`MeshModel.apply` returns a new model that shares every unchanged entry and index bucket with the
old one (Istio ``updateContext``), so a change costs what changed, not the mesh size.

Entries come in two scopes:
- host-scoped (VirtualService, DestinationRule, ServiceEntry, LocalRateLimit with hosts): a proxy
  gets them when it may call one of their hosts;
- workload-scoped (Sidecar, Gateway, security policies, Plugin, RateLimit, Telemetry, LocalRateLimit
  without hosts): a proxy gets them when they select its workload (same namespace or the root
  namespace). A security
  policy with ``targetRef(s)`` is for gateways and waypoints and selects no sidecar (Istio).
The mesh's one MeshConfig goes to every proxy (path normalization, trusted proxies, authorizers,
telemetry providers), and
its ``rootNamespace`` (default ``istio-system``) is the root namespace for every kind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from meshbus.bus.config import resources as kinds
from meshbus.bus.config.hosts import host_matches, to_fqdn
from meshbus.bus.config.virtual_service import Destination, VirtualServiceSpec
from meshbus.bus.schemas.config import manifest_resource
from meshbus.bus.schemas.discovery import resource_key

ROOT_NAMESPACE = "istio-system"
"""The root namespace when no MeshConfig names one (Istio's default)."""
HOST_SCOPED = frozenset({"VirtualService", "DestinationRule", "ServiceEntry"})
WORKLOAD_SCOPED = frozenset(
    {
        "Sidecar",
        "Gateway",
        "PeerAuthentication",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "Plugin",
        "RateLimit",
        "Telemetry",
    }
)
PEER_AUTHENTICATION = "PeerAuthentication"
TELEMETRY = "Telemetry"
MESH_CONFIG = "MeshConfig"
"""Sent to every proxy: its rootNamespace says where a Plugin or a Telemetry applies mesh-wide."""
IGNORED = frozenset({"WorkloadEntry"})
"""Not sent to proxies: workloads reach the mesh by registering."""
_SERVED_GROUPS = frozenset({"networking.istio.io", "security.istio.io", "telemetry.istio.io", "meshbus.io"})
_SERVED_KINDS = HOST_SCOPED | WORKLOAD_SCOPED | IGNORED | {"LocalRateLimit", MESH_CONFIG}


def served(value: Mapping[str, Any]) -> bool:
    """Whether discovery models this stored value at all: kinds meshbus accepts without enforcing them
    (EnvoyFilter, the Gateway API's Gateway, ...) never reach a proxy."""
    group = str(value.get("apiVersion", "")).rpartition("/")[0]
    return group in _SERVED_GROUPS and value.get("kind") in _SERVED_KINDS


def value_digest(value: Mapping[str, Any]) -> str:
    """Content hash of one resource dict, independent of key order."""
    return hashlib.sha256(msgpack.packb(_canonical(value), use_bin_type=True)).hexdigest()[:16]


def _canonical(v: Any) -> Any:
    if isinstance(v, Mapping):
        return [[k, _canonical(v[k])] for k in sorted(v)]
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    return v


def _selector(res: kinds.Resource) -> dict[str, str] | None:
    """Workload labels a workload-scoped resource selects (None = every workload in scope)."""
    if isinstance(res, kinds.Gateway):
        return dict(res.spec.selector)
    labels: Mapping[str, str] | None = None
    if isinstance(
        res,
        (
            kinds.PeerAuthentication,
            kinds.RequestAuthentication,
            kinds.AuthorizationPolicy,
            kinds.RateLimit,
            kinds.Telemetry,
        ),
    ):
        labels = res.spec.selector.match_labels if res.spec.selector is not None else None
    elif isinstance(res, kinds.Plugin):
        labels = res.spec.selector.match_labels if res.spec.selector is not None else None
    elif isinstance(res, (kinds.Sidecar, kinds.LocalRateLimit)):
        sel = res.spec.workload_selector
        labels = sel.labels if sel is not None else None
    return dict(labels) if labels else None


def route_destinations(spec: VirtualServiceSpec) -> Iterator[tuple[str, Destination]]:
    """(field path, destination) of every route of a VirtualService: http, then tcp, then tls."""
    for i, http in enumerate(spec.http):
        for j, rd in enumerate(http.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination
    for i, tcp in enumerate(spec.tcp or ()):
        for j, d in enumerate(tcp.route):
            yield f"spec.tcp[{i}].route[{j}].destination", d.destination
    for i, tls in enumerate(spec.tls or ()):
        for j, d in enumerate(tls.route):
            yield f"spec.tls[{i}].route[{j}].destination", d.destination


def _destination_hosts(spec: VirtualServiceSpec, namespace: str) -> tuple[frozenset[str], frozenset[str]]:
    """(every destination host, those named without a port: they need a ServiceEntry to resolve)."""
    dests = [d for _path, d in route_destinations(spec)]
    for http in spec.http:
        if http.mirror is not None:
            dests.append(http.mirror)
        dests.extend(m.destination for m in http.mirrors)
    out: set[str] = set()
    portless: set[str] = set()
    for dest in dests:
        host = to_fqdn(dest.host, namespace)
        out.add(host)
        if dest.port is None or dest.port.number is None:
            portless.add(host)
    return frozenset(out), frozenset(portless)


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    key: str
    kind: str
    namespace: str
    name: str
    value: Mapping[str, Any]
    """The stored form (camelCase JSON): snapshots carry it (``packed``), ``digest`` hashes it."""
    resource: kinds.Resource
    """``value`` validated into the config models: what discovery reads."""
    revision: int
    digest: str
    hosts: frozenset[str] = frozenset()
    """FQDNs or wildcard patterns this resource is about (host-scoped kinds)."""
    destinations: frozenset[str] = frozenset()
    """FQDNs a VirtualService routes or mirrors to."""
    portless: frozenset[str] = frozenset()
    """Destinations named without a port: only a ServiceEntry (or registered workloads) resolves them."""
    selector: dict[str, str] | None = None
    workload_scoped: bool = False
    gateway_only: bool = False
    """A security policy bound with targetRef(s): it selects no sidecar."""
    packed: bytes = b""
    """msgpack of `value`, made once and reused in every snapshot that carries this resource."""

    @classmethod
    def from_value(cls, value: Mapping[str, Any], revision: int) -> ConfigEntry:
        """Raises ValueError (naming the resource and every bad field) when ``value`` does not validate."""
        key = resource_key(value)
        res = manifest_resource(value, f"config {key}@{revision}")
        kind, ns = res.kind, res.metadata.namespace
        hosts: frozenset[str] = frozenset()
        dests: frozenset[str] = frozenset()
        portless: frozenset[str] = frozenset()
        scoped = kind in WORKLOAD_SCOPED
        if isinstance(res, (kinds.VirtualService, kinds.ServiceEntry)):
            hosts = frozenset(to_fqdn(h, ns) for h in res.spec.hosts)
            if isinstance(res, kinds.VirtualService):
                dests, portless = _destination_hosts(res.spec, ns)
        elif isinstance(res, kinds.DestinationRule):
            hosts = frozenset({to_fqdn(res.spec.host, ns)})
        elif isinstance(res, kinds.LocalRateLimit):
            hosts = frozenset(to_fqdn(h, ns) for h in res.spec.hosts)
            scoped = not hosts
        gateway_only = isinstance(res, (kinds.AuthorizationPolicy, kinds.RequestAuthentication)) and bool(
            res.spec.target_ref is not None or res.spec.target_refs
        )
        return cls(
            key=key,
            kind=kind,
            namespace=ns,
            name=res.metadata.name,
            value=value,
            resource=res,
            revision=revision,
            digest=value_digest(value),
            hosts=hosts,
            destinations=dests,
            portless=portless,
            selector=_selector(res) if scoped else None,
            workload_scoped=scoped,
            gateway_only=gateway_only,
            packed=msgpack.packb(value, use_bin_type=True),
        )

    def selects(self, namespace: str, labels: Mapping[str, str], root: str = ROOT_NAMESPACE) -> bool:
        """Workload-scoped: does this resource apply to a workload in ``namespace`` with ``labels``?
        ``root``: the mesh's root namespace (`MeshModel.root_namespace`)."""
        if self.namespace not in (namespace, root) or self.gateway_only:
            return False
        if self.kind == "Gateway" and not self.selector:
            return False
        sel = self.selector or {}
        return all(labels.get(k) == v for k, v in sel.items())

    def about(self, host: str) -> bool:
        """Host-scoped: is this resource about FQDN ``host``?"""
        return any(host_matches(h, host) or host_matches(host, h) for h in self.hosts)


@dataclass(frozen=True, slots=True)
class MeshModel:
    entries: Mapping[str, ConfigEntry] = field(default_factory=dict)
    host_scoped: Mapping[str, ConfigEntry] = field(default_factory=dict)
    workload_scoped: Mapping[str, Mapping[str, ConfigEntry]] = field(default_factory=dict)
    """namespace -> key -> entry."""
    revision: int = 0
    """Highest KV revision seen (puts and deletes)."""
    generation: int = 0
    """Bumped by every apply that changed something (cache key for derived data)."""
    peer_authentications: tuple[ConfigEntry, ...] = ()
    """Every PeerAuthentication, by key: each proxy gets all of them (see scoped_for)."""
    mesh_config: ConfigEntry | None = None
    """The MeshConfig (the first by key, should there be several); every proxy gets it."""

    @property
    def root_namespace(self) -> str:
        """MeshConfig's rootNamespace, else Istio's default: where a policy or Plugin applies mesh-wide."""
        mc = self.mesh_config
        if mc is not None and isinstance(mc.resource, kinds.MeshConfig):
            return mc.resource.spec.root_namespace
        return ROOT_NAMESPACE

    def root_for(self, e: ConfigEntry) -> str:
        """The root namespace ``e`` is selected under: the mesh's, for every kind."""
        return self.root_namespace

    def get(self, key: str) -> ConfigEntry | None:
        return self.entries.get(key)

    def apply(self, puts: Iterable[ConfigEntry] = (), deletes: Iterable[tuple[str, int]] = ()) -> MeshModel:
        """A new model with ``puts`` stored and ``deletes`` (key, revision) removed."""
        entries = dict(self.entries)
        host_scoped = dict(self.host_scoped)
        scoped = dict(self.workload_scoped)  # inner dicts copied only where they change
        revision = self.revision
        changed = False

        def drop(key: str) -> None:
            old = entries.pop(key, None)
            if old is None:
                return
            host_scoped.pop(key, None)
            if old.workload_scoped:
                inner = dict(scoped.get(old.namespace, {}))
                inner.pop(key, None)
                if inner:
                    scoped[old.namespace] = inner
                else:
                    scoped.pop(old.namespace, None)

        # A KV revision never goes back for a key: an older one is a stale read (after a reconnect, a
        # watch restarted on a JetStream replica still catching up), and applying it would roll the
        # mesh back to config the operator already replaced (seen under chaos).
        for key, rev in deletes:
            revision = max(revision, rev)
            old = entries.get(key)
            if old is not None and 0 < rev < old.revision:
                continue
            if old is not None:
                drop(key)
                changed = True
        for e in puts:
            revision = max(revision, e.revision)
            old = entries.get(e.key)
            if old is not None and (old.digest == e.digest or 0 < e.revision < old.revision):
                continue
            drop(e.key)
            changed = True
            if e.kind in IGNORED:
                entries[e.key] = e
                continue
            entries[e.key] = e
            if e.workload_scoped:
                inner = dict(scoped.get(e.namespace, {}))
                inner[e.key] = e
                scoped[e.namespace] = inner
            elif e.hosts:
                host_scoped[e.key] = e
        pas = tuple(
            sorted(
                (e for inner in scoped.values() for e in inner.values() if e.kind == PEER_AUTHENTICATION),
                key=lambda e: e.key,
            )
        )
        mesh_configs = sorted((e for e in entries.values() if e.kind == MESH_CONFIG), key=lambda e: e.key)
        return MeshModel(
            entries=entries,
            host_scoped=host_scoped,
            workload_scoped=scoped,
            revision=revision,
            generation=self.generation + (1 if changed else 0),
            peer_authentications=pas,
            mesh_config=mesh_configs[0] if mesh_configs else None,
        )

    def scoped_for(self, namespace: str, labels: Mapping[str, str]) -> list[ConfigEntry]:
        """The workload-scoped resources one workload's proxy gets.

        The MeshConfig goes to every proxy (the proxy reads its root namespace and providers), with
        the Telemetry resources of its root namespace. PeerAuthentications go to every proxy, not only
        to the workloads they select: a proxy resolves
        its own inbound policy from them, and its auto-mTLS reads the destination workloads' (a
        DISABLE server is sent plaintext), which istiod decides centrally and meshbus in each proxy.
        So does the MeshConfig.
        """
        out: list[ConfigEntry] = []
        for ns in {namespace, self.root_namespace}:
            out.extend(
                e
                for e in self.workload_scoped.get(ns, {}).values()
                if e.kind != PEER_AUTHENTICATION and e.selects(namespace, labels, self.root_for(e))
            )
        out.extend(self.peer_authentications)
        if self.mesh_config is not None:
            out.append(self.mesh_config)
        return out

    def sidecar_for(self, namespace: str, labels: Mapping[str, str]) -> ConfigEntry | None:
        """Istio precedence: a Sidecar with a matching selector, else the namespace's selector-less one,
        else the root namespace's; ties broken by name (Istio: oldest, which we cannot know)."""
        best: tuple[int, str] | None = None
        chosen = None
        root = self.root_namespace
        for ns, rank_base in ((namespace, 0), (root, 2)):
            for e in self.workload_scoped.get(ns, {}).values():
                if e.kind != "Sidecar" or not e.selects(namespace, labels, root):
                    continue
                if ns == root and e.selector:
                    continue  # a root-namespace Sidecar with a selector is ignored by Istio
                rank = (rank_base + (0 if e.selector else 1), e.name)
                if best is None or rank < best:
                    best, chosen = rank, e
        return chosen
