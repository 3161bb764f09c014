"""MeshModel + registry -> per-node config, and which nodes a change concerns (sans-IO).

Nodes fall into *visibility classes*: every node selected by the same Sidecar (or by none) sees
the same host-scoped resources, so that selection is computed once per class and shared; a node
adds only the workload-scoped resources (security policies, its Sidecar, ...) that select it.
The same classes make change routing cheap: a changed host is tested against each class (there
are few), and only members of classes that see it are regenerated, so the cost of a change
follows the number of proxies it concerns, not the mesh size.

`check_consistent` runs before anything is published (go-control-plane ``Consistent``): every
subset a route names must be defined by a DestinationRule in the same snapshot.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshbus.bus.config.hosts import host_matches, to_fqdn
from meshbus.bus.config.resources import DestinationRule, VirtualService
from meshbus.bus.schemas.discovery import Register

from .endpoints import synthesize
from .model import MESH_CONFIG, PEER_AUTHENTICATION, ConfigEntry, MeshModel, route_destinations
from .push_request import PushRequest
from .registry import Registry, ServiceKey
from .visibility import Visibility

log = logging.getLogger(__name__)

OPEN = ""
"""Class key of nodes without a Sidecar egress section (they see every host)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node: str
    entries: tuple[ConfigEntry, ...]
    digest: str
    config_revision: int
    keys: Mapping[str, str] = field(default_factory=dict)
    """key -> resource digest (for deltas); shared with the class when nothing is node-specific."""
    problems: tuple[str, ...] = ()
    """`check_consistent` findings: a node with problems is not pushed to."""

    def resources(self) -> list[Mapping[str, Any]]:
        return [e.value for e in self.entries]


@dataclass(frozen=True, slots=True)
class ClassView:
    entries: tuple[ConfigEntry, ...]
    keys: frozenset[str]
    destinations: frozenset[str]
    visibility: Visibility
    withheld: tuple[tuple[str, str], ...] = ()
    """(VirtualService key, host): routes to a service that does not exist (yet), kept back."""
    digest: str = ""
    """Digest of `entries` (sorted by key): a node with no workload-scoped resources reuses it."""
    key_digests: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def withhold_unresolvable(entries: list[ConfigEntry]) -> tuple[list[ConfigEntry], list[tuple[str, str]]]:
    """Keep back VirtualServices that route, without a port, to a host no ServiceEntry declares.

    Such a route cannot be built (the proxy would refuse the whole snapshot); in a mesh it usually
    means the service has not registered yet. The VirtualService goes out as soon as it has.
    """
    services = [h for e in entries if e.kind == "ServiceEntry" for h in e.hosts]
    exact = {h for h in services if not h.startswith("*")}
    wild = [h for h in services if h.startswith("*")]
    kept: list[ConfigEntry] = []
    withheld: list[tuple[str, str]] = []
    for e in entries:
        missing = (
            [h for h in e.portless if h not in exact and not any(host_matches(w, h) for w in wild)]
            if e.kind == "VirtualService"
            else []
        )
        if missing:
            withheld.extend((e.key, h) for h in sorted(missing))
        else:
            kept.append(e)
    return kept, withheld


def digest_of(entries: Iterable[ConfigEntry], seed: str = "") -> str:
    h = hashlib.sha256(seed.encode())
    for e in entries:
        h.update(f"{e.key}:{e.digest}\n".encode())
    return h.hexdigest()[:20]


def check_consistent(entries: Iterable[ConfigEntry]) -> list[str]:
    """Problems that make a snapshot unpublishable (empty list = consistent)."""
    entries = list(entries)
    subsets: dict[str, set[str]] = {}
    for e in entries:
        if isinstance(e.resource, DestinationRule):
            host = next(iter(e.hosts), "")
            subsets.setdefault(host, set()).update(s.name for s in e.resource.spec.subsets)
    problems = []
    for e in entries:
        if not isinstance(e.resource, VirtualService):
            continue
        for path, dest in route_destinations(e.resource.spec):
            if not dest.subset:
                continue
            host = to_fqdn(dest.host, e.namespace)
            if dest.subset not in subsets.get(host, ()):
                problems.append(
                    f"{e.kind} {e.namespace}/{e.name}: {path}: "
                    f"subset {dest.subset!r} of {host} is not defined by any DestinationRule in the snapshot"
                )
    return problems


@dataclass(slots=True)
class SnapshotGenerator:
    """Holds the current model, the synthesized endpoint resources and the visibility classes."""

    registry: Registry
    model: MeshModel = field(default_factory=MeshModel)
    services: dict[ServiceKey, ConfigEntry] = field(default_factory=dict)
    services_generation: int = 0
    node_class: dict[str, str] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    _class_cache: dict[str, tuple[tuple[int, int], ClassView]] = field(default_factory=dict)

    # -- inputs
    def set_model(self, model: MeshModel, changed: Iterable[str] = ()) -> set[str]:
        """Install a new model; returns nodes whose visibility changed (a Sidecar changed)."""
        changed = list(changed)
        old = self.model
        self.model = model
        sidecar_ns: set[str] = set()
        for key in changed:
            for e in (old.get(key), model.get(key)):
                if e is not None and e.kind == "Sidecar":
                    sidecar_ns.add(e.namespace)
        root = model.root_namespace
        every = root != old.root_namespace  # root-namespace Sidecars now apply elsewhere
        moved: set[str] = set()
        if sidecar_ns or every:
            for node in list(self.node_class):
                entry = self.registry.get(node)
                if entry is None:
                    continue
                w = entry.workload
                if every or root in sidecar_ns or w.namespace in sidecar_ns:
                    if self._classify(w):
                        moved.add(node)
            # Same Sidecar, new egress: its members stay in the class but see other hosts now.
            for key in changed:
                if key in self.members:
                    moved |= self.members[key]
        return moved

    def update_services(self, keys: Iterable[ServiceKey]) -> None:
        """Re-synthesize the endpoint resources of services whose workloads changed."""
        for key in keys:
            try:
                entry = synthesize(key, self.registry.endpoints(key))
            except ValueError as exc:
                # Sent anyway, every proxy that sees it would refuse its whole snapshot: leave it out.
                log.error("service %s/%s left out of snapshots: %s", *key, exc)
                entry = None
            if entry is None:
                self.services.pop(key, None)
            else:
                self.services[key] = entry
        self.services_generation += 1

    def track(self, workload: Register) -> None:
        """Start (or refresh) tracking a node's visibility class."""
        self._classify(workload)

    def untrack(self, node: str) -> None:
        cls = self.node_class.pop(node, None)
        if cls is not None:
            self.members.get(cls, set()).discard(node)

    def _classify(self, w: Register) -> bool:
        sidecar = self.model.sidecar_for(w.namespace, w.labels)
        vis = Visibility.of(sidecar)
        cls = OPEN if sidecar is None or vis.everything else sidecar.key
        old = self.node_class.get(w.node_id)
        if old == cls:
            return False
        if old is not None:
            self.members.get(old, set()).discard(w.node_id)
        self.node_class[w.node_id] = cls
        self.members.setdefault(cls, set()).add(w.node_id)
        return old is not None

    # -- per class
    def _universe(self) -> Iterable[ConfigEntry]:
        yield from self.model.host_scoped.values()
        yield from self.services.values()

    def class_view(self, cls: str) -> ClassView:
        stamp = (self.model.generation, self.services_generation)
        cached = self._class_cache.get(cls)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        sidecar = self.model.get(cls) if cls else None
        vis = Visibility.of(sidecar)
        universe = list(self._universe())
        chosen = [e for e in universe if vis.sees(e)] if not vis.everything else universe
        dests = frozenset(d for e in chosen for d in e.destinations)
        if not vis.everything and dests:
            # A route's destination must resolve even when the Sidecar does not list it.
            keys = {e.key for e in chosen}
            chosen += [
                e for e in universe if e.key not in keys and e.kind != "VirtualService" and e.hosts & dests
            ]
        kept, withheld = withhold_unresolvable(chosen)
        kept.sort(key=lambda e: e.key)
        view = ClassView(
            entries=tuple(kept),
            digest=digest_of(kept),
            key_digests={e.key: e.digest for e in kept},
            problems=tuple(check_consistent(kept)),
            keys=frozenset(e.key for e in chosen),
            destinations=dests,
            visibility=vis,
            withheld=tuple(withheld),
        )
        self._class_cache[cls] = (stamp, view)
        return view

    def withheld(self) -> set[tuple[str, str]]:
        """(VirtualService key, host) held back in any current class view."""
        return {w for _stamp, view in self._class_cache.values() for w in view.withheld}

    # -- per node
    def generate(self, workload: Register) -> NodeConfig:
        cls = self.node_class.get(workload.node_id)
        if cls is None:
            self._classify(workload)
            cls = self.node_class[workload.node_id]
        view = self.class_view(cls)
        scoped = self.model.scoped_for(workload.namespace, workload.labels)
        rev = self.model.revision
        if not scoped:  # the common case: share the class's entries, digest and consistency verdict
            return NodeConfig(
                workload.node_id, view.entries, view.digest, rev, view.key_digests, view.problems
            )
        scoped.sort(key=lambda e: e.key)
        digest = digest_of(scoped, seed=view.digest)
        keys = {**view.key_digests, **{e.key: e.digest for e in scoped}}
        # Workload-scoped kinds carry no routes: the class's consistency verdict still holds.
        return NodeConfig(workload.node_id, view.entries + tuple(scoped), digest, rev, keys, view.problems)

    # -- change routing
    def affected(self, req: PushRequest, old_model: MeshModel) -> set[str]:
        """Nodes a merged push request concerns."""
        if req.full:
            return set(self.node_class)
        nodes = set(req.nodes) & set(self.node_class)
        hosts: set[tuple[str, str]] = set()  # (host, namespace of the resource about it)
        touched_keys: set[str] = set()
        for key in req.config:
            for e in (old_model.get(key), self.model.get(key)):
                if e is None:
                    continue
                if e.kind == MESH_CONFIG:
                    return set(self.node_class)  # its root namespace may select other Plugins anywhere
                if e.workload_scoped:
                    nodes |= self._selected_nodes(e)
                else:
                    hosts |= {(h, e.namespace) for h in e.hosts}
                    touched_keys.add(key)
        for ns, svc in req.services:
            hosts.add((to_fqdn(svc, ns), ns))
        if hosts or touched_keys:
            for cls, members in self.members.items():
                if not members:
                    continue
                if cls == OPEN or self._class_concerned(cls, hosts, touched_keys):
                    nodes |= members
        return nodes

    def _class_concerned(self, cls: str, hosts: set[tuple[str, str]], keys: set[str]) -> bool:
        # The view cached before this change is the right one to ask: if no change since it was
        # built concerned this class, its content is still what it was. Rebuilding every class's
        # view here would make each change cost the whole mesh.
        cached = self._class_cache.get(cls)
        view = cached[1] if cached is not None else self.class_view(cls)
        if keys & view.keys or any(h in view.destinations for h, _ in hosts):
            return True
        return any(view.visibility.sees_host(h, ns) for h, ns in hosts)

    def _selected_nodes(self, e: ConfigEntry) -> set[str]:
        """Nodes a workload-scoped resource selects (only its namespace is scanned, unless root)."""
        if e.kind == PEER_AUTHENTICATION:
            return set(self.node_class)  # every proxy gets every PeerAuthentication (MeshModel.scoped_for)
        out = set()
        root = self.model.root_for(e)
        for (ns, _svc), members in self.registry.by_service.items():
            if e.namespace not in (ns, root):
                continue
            for node, w in members.items():
                if node in self.node_class and e.selects(w.namespace, w.labels, root):
                    out.add(node)
        return out
