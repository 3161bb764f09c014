"""Which connections use TLS, decided from config alone (sans-IO): PeerAuthentication and DestinationRule.

Inbound (PeerAuthentication), resolved as Istio does for one workload: the mesh-wide policy (root
namespace, no selector), then the workload's namespace policy (no selector), then the policy whose
selector matches the workload's labels, then that policy's ``portLevelMtls`` entry for the port;
each ``UNSET`` level inherits the one above, and with nothing set the mode is PERMISSIVE.

Outbound (DestinationRule ``tls`` + auto-mTLS): a DestinationRule ``tls`` block decides for every
endpoint of its cluster; without one, endpoints that are mesh workloads (their ServiceEntry endpoint
names a ``serviceAccount``, as discovery's synthesized registry entries do) get ISTIO_MUTUAL and the
others plaintext, except a workload whose PeerAuthentication (as resolved above, for its labels,
namespace and port) is DISABLE: it gets plaintext too, as with Istio's auto-mTLS. The expected server identities are the service accounts of the service's
endpoints (``spiffe://<td>/ns/<ns>/sa/<sa>``), Istio's SAN list for a mesh service.

The adapter (proxy/tls/mtls.py) turns these decisions into SSL contexts and handshakes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshbus.bus.config.proxy_kinds import PeerAuthentication
    from meshbus.proxy.build.cluster_builder import Service
    from meshbus.proxy.core.cluster import Cluster

log = logging.getLogger(__name__)

ROOT_NAMESPACE = "istio-system"
STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"
ISTIO_MUTUAL, SIMPLE, MUTUAL = "ISTIO_MUTUAL", "SIMPLE", "MUTUAL"


@dataclass(frozen=True, slots=True)
class PeerAuthRule:
    """One PeerAuthentication, reduced to what mode resolution needs."""

    name: str
    namespace: str
    selector: Mapping[str, str] | None
    mode: str = UNSET
    port_modes: Mapping[int, str] = field(default_factory=dict)

    def selects(self, labels: Mapping[str, str]) -> bool:
        sel = self.selector
        return bool(sel) and all(labels.get(k) == v for k, v in sel.items())  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """All PeerAuthentications a proxy sees; `mode_for` resolves one workload port."""

    rules: tuple[PeerAuthRule, ...] = ()
    root_namespace: str = ROOT_NAMESPACE

    def mode_for(self, port: int | None, namespace: str, labels: Mapping[str, str]) -> str:
        mesh = ns = workload = None
        # Several at one level: Istio takes the oldest; without creation times, the first by name.
        for r in sorted(self.rules, key=lambda r: (r.namespace, r.name)):
            if r.selector:
                if r.namespace == namespace and workload is None and r.selects(labels):
                    workload = r
            elif r.namespace == namespace and ns is None:
                ns = r
            elif r.namespace == self.root_namespace and mesh is None:
                mesh = r
        mode = PERMISSIVE
        for level in (mesh, ns, workload):
            if level is not None and level.mode != UNSET:
                mode = level.mode
        if workload is not None and port is not None:
            pm = workload.port_modes.get(port, UNSET)
            if pm != UNSET:
                mode = pm
        return mode


def inbound_policy(
    peer_authentications: Iterable[PeerAuthentication], root_namespace: str = ROOT_NAMESPACE
) -> InboundPolicy:
    rules = []
    for res in peer_authentications:
        spec = res.spec
        sel = spec.selector.match_labels if spec.selector is not None else None
        rules.append(
            PeerAuthRule(
                name=res.metadata.name,
                namespace=res.metadata.namespace,
                selector=dict(sel) if sel else None,
                mode=spec.mtls.mode if spec.mtls is not None else UNSET,
                port_modes={int(p): m.mode for p, m in spec.port_level_mtls.items()},
            )
        )
    return InboundPolicy(tuple(rules), root_namespace)


@dataclass(frozen=True, slots=True)
class ClusterTls:
    """How connections of one cluster are made."""

    mode: str
    """DISABLE | ISTIO_MUTUAL | SIMPLE | MUTUAL (from the DestinationRule), or "AUTO" (no rule)."""
    identities: tuple[tuple[str, str], ...] = ()
    """(namespace, service account) of the destination's workloads: the server identities accepted."""
    mesh_endpoints: frozenset[tuple[str, int]] = frozenset()
    """Endpoints that are mesh workloads (they carry a service account): auto-mTLS applies to them."""
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    ca_certificates: str | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    insecure_skip_verify: bool = False

    def mode_for(self, endpoint: tuple[str, int]) -> str:
        """The mode for one endpoint (auto-mTLS is decided per endpoint, as Envoy's transport socket match)."""
        if self.mode == "AUTO":
            return ISTIO_MUTUAL if endpoint in self.mesh_endpoints else DISABLE
        return self.mode

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "identities": [f"ns/{ns}/sa/{sa}" for ns, sa in self.identities],
            "meshEndpoints": sorted(f"{a}:{p}" for a, p in self.mesh_endpoints),
            "sni": self.sni,
        }


@dataclass(frozen=True, slots=True)
class TlsPlan:
    clusters: Mapping[str, ClusterTls] = field(default_factory=dict)
    inbound: InboundPolicy = field(default_factory=InboundPolicy)


EMPTY_PLAN = TlsPlan()


def _service_accounts(
    svc: Service, port_number: int, inbound: InboundPolicy | None = None
) -> tuple[dict[tuple[str, int], tuple[str, str]], set[tuple[str, str]]]:
    """Endpoint key -> (namespace, sa) for one service port, and every identity of the service.

    With ``inbound`` (the PeerAuthentications this proxy sees), an endpoint whose workload takes
    plaintext there (mode DISABLE for its port) is left out: Istio's auto-mTLS reads the server's
    PeerAuthentication too, so a DISABLE workload is not sent TLS it would not understand. The port is
    the workload's: the service port's targetPort, else its number (registry entries declare the app
    ports and point their endpoints at the sidecars' inbound listener).
    """
    by_key: dict[tuple[str, int], tuple[str, str]] = {}
    every: set[tuple[str, str]] = set()
    res = svc.resource
    if res is None:
        return by_key, every
    sp = next((p for p in svc.ports if p.number == port_number), None)
    for ep in res.spec.endpoints:
        sa = ep.service_account
        if not sa:
            continue
        ident = (svc.namespace, sa)
        every.add(ident)
        if sp is not None:
            if (
                inbound is not None
                and inbound.rules
                and inbound.mode_for(sp.target_port or sp.number, svc.namespace, ep.labels or {}) == DISABLE
            ):
                continue
            # Same port rule as cluster_builder.endpoints_for: named port, else targetPort, else the number.
            eport = ep.ports.get(sp.name) or sp.target_port or sp.number
            by_key[(ep.address, eport)] = ident
    return by_key, every


def cluster_tls(cluster: Cluster, svc: Service | None, inbound: InboundPolicy | None = None) -> ClusterTls:
    """The TLS decision for one built cluster (``cluster.tls``: the DestinationRule's TlsSettings or None).

    ``inbound``: the PeerAuthentications, which auto-mTLS consults (see _service_accounts)."""
    by_key: dict[tuple[str, int], tuple[str, str]] = {}
    every: set[tuple[str, str]] = set()
    if svc is not None:
        by_key, every = _service_accounts(svc, cluster.port, inbound)
    mesh = frozenset(e.key for e in cluster.endpoints if e.key in by_key)
    idents = tuple(sorted(every))
    t = cluster.tls
    if t is None:
        return ClusterTls("AUTO", idents, mesh)
    return ClusterTls(
        t.mode,
        idents,
        mesh,
        sni=t.sni,
        subject_alt_names=tuple(t.subject_alt_names),
        ca_certificates=t.ca_certificates,
        client_certificate=t.client_certificate,
        private_key=t.private_key,
        insecure_skip_verify=t.insecure_skip_verify,
    )
