"""Istio's standard request metrics for one listener (the stats filter's part of the STATS phase).

A listener's `StatsRecorder` records every request its exchanges finish, into the series of its peer
pair: the outbound listener reports ``reporter="source"`` keyed by (cluster, upstream endpoint), the
inbound one ``reporter="destination"`` keyed by (the caller's peer header, its mTLS identity). A
series' labels are built once, when its key is first seen (meshbus.telemetry.peer says how each side
learns the other); after that a request costs two dict lookups and ``RequestSeries.record``.

A Telemetry resource's metric overrides (``disabled``, ``tagOverrides``) change what a series'
labels are: the overrides are applied when the series is made, evaluating each UPSERT's CEL
expression over the peer pair (``source.*``, ``destination.*``, ``node.*``). An expression that reads
the request (``request.*``, ``response.*``, ...) is evaluated per request, and its values key
sub-series (only such policies pay for it). The caches belong to one policy: a new one starts afresh.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.build.telemetry_policy import REMOVE, MetricSettings, SidePolicy
from meshbus.telemetry import fields
from meshbus.telemetry.metrics import IstioMetrics, RequestSeries
from meshbus.telemetry.peer import PEER_HEADER, UNKNOWN_WORKLOAD, Workload, believed

if TYPE_CHECKING:
    from meshbus.proxy.adapters.exchange import Exchange
    from meshbus.proxy.core.cluster import Cluster

log = logging.getLogger(__name__)

MAX_SERIES: Final = 4096
"""Peer pairs kept per listener before the caches start afresh (configs and callers come and go)."""

_U: Final = fields.UNKNOWN


class Identity:
    """This proxy's workload, and (once it has a certificate) its SPIFFE ID and trust domain."""

    __slots__ = ("principal", "service", "service_fqdn", "trust_domain", "workload")

    def __init__(self, workload: Workload, service: str = "", service_fqdn: str = "") -> None:
        self.workload = workload
        self.service = service or _U
        self.service_fqdn = service_fqdn or _U
        self.principal = _U
        self.trust_domain = ""

    def set_principal(self, principal: str) -> None:
        self.principal = principal
        self.trust_domain = principal[9:].partition("/")[0] if principal.startswith("spiffe://") else ""


def _side_labels(prefix: str, w: Workload, principal: str) -> dict[str, str]:
    return {
        f"{prefix}_workload": w.name,
        f"{prefix}_workload_namespace": w.namespace,
        f"{prefix}_principal": principal,
        f"{prefix}_app": w.app,
        f"{prefix}_version": w.version,
        f"{prefix}_canonical_service": w.canonical_service,
        f"{prefix}_canonical_revision": w.canonical_revision,
        f"{prefix}_cluster": w.cluster,
    }


def _attrs(w: Workload, principal: str) -> dict[str, Any]:
    return {
        "workload": w.name,
        "namespace": w.namespace,
        "app": w.app,
        "version": w.version,
        "principal": principal,
        "service_account": w.service_account,
    }


class StatsRecorder:
    """The request metrics of one listener (``direction`` outbound or inbound)."""

    __slots__ = ("by_cluster", "by_peer", "direction", "ident", "metrics", "policy", "reporter")

    def __init__(self, direction: str, metrics: IstioMetrics, ident: Identity) -> None:
        self.direction = direction
        self.reporter = fields.REPORTER_SOURCE if direction == "outbound" else fields.REPORTER_DESTINATION
        self.metrics = metrics
        self.ident = ident
        self.policy: SidePolicy | None = None
        self.by_cluster: dict[int, tuple[Any, dict[str, Any]]] = {}
        self.by_peer: dict[str, dict[str, Any]] = {}

    # -- per request ----------------------------------------------------------------------------
    def series(self, ex: Exchange, side: SidePolicy) -> Any:
        """The recorder for this request's peer pair (a RequestSeries, or a `_PerRequest`)."""
        if side is not self.policy:
            self.policy = side
            self.by_cluster = {}
            self.by_peer = {}
        if self.reporter == fields.REPORTER_SOURCE:
            cluster = ex.cluster
            key = id(cluster)
            entry = self.by_cluster.get(key)
            if entry is None or entry[0] is not cluster:
                if len(self.by_cluster) >= MAX_SERIES:
                    self.by_cluster.clear()
                entry = self.by_cluster[key] = (cluster, {})
            host = ex.upstream_host or ""
            s = entry[1].get(host)
            if s is None:
                s = entry[1][host] = self._make(self._source_labels(ex, cluster, host), side)
            return s
        claimed = ex.head.hdict.get(PEER_HEADER, "")
        principal = ex.dc.peer_principal
        by_principal = self.by_peer.get(claimed)
        if by_principal is None:
            if len(self.by_peer) >= MAX_SERIES:
                self.by_peer.clear()
            by_principal = self.by_peer[claimed] = {}
        pkey = principal or ""
        s = by_principal.get(pkey)
        if s is None:
            s = by_principal[pkey] = self._make(self._destination_labels(ex, claimed, principal), side)
        return s

    # -- label sets (once per peer pair) ---------------------------------------------------------
    def _source_labels(
        self, ex: Exchange, cluster: Cluster | None, host: str
    ) -> tuple[dict[str, str], dict[str, Any]]:
        ident = self.ident
        me = ident.workload
        route = ex.route
        service = (
            cluster.service
            if cluster is not None and cluster.service
            else (route.virtual_host if route is not None else _U)
        )
        short, _, rest = service.partition(".")
        ns = rest.partition(".")[0] or _U
        dest = UNKNOWN_WORKLOAD
        dest_principal = _U
        if cluster is not None and host:
            for ep in cluster.endpoints:
                if f"{ep.address}:{ep.port}" == host:
                    dest = Workload.of(short, ns, ep.labels)
                    break
            dest_principal = self._upstream_principal(ex, cluster, host, ns)
        labels = {
            fields.REPORTER: self.reporter,
            **_side_labels("source", me, ident.principal),
            **_side_labels("destination", dest, dest_principal),
            fields.DESTINATION_SERVICE: service,
            fields.DESTINATION_SERVICE_NAME: short or _U,
            fields.DESTINATION_SERVICE_NAMESPACE: ns,
            fields.REQUEST_PROTOCOL: fields.HTTP,
            fields.CONNECTION_SECURITY_POLICY: _U,  # Istio: only the server side knows
            fields.GRPC_RESPONSE_STATUS: "",
        }
        if dest is UNKNOWN_WORKLOAD and cluster is not None and cluster.subset:
            labels[fields.DESTINATION_VERSION] = cluster.subset
        attrs = {
            "source": _attrs(me, ident.principal),
            "destination": {**_attrs(dest, dest_principal), "service": service},
        }
        return labels, attrs

    def _upstream_principal(self, ex: Exchange, cluster: Cluster, host: str, ns: str) -> str:
        """The destination's SPIFFE ID when the proxy sent it mTLS (auto or ISTIO_MUTUAL) and the
        service has one identity; Istio reads it from the peer certificate."""
        runtime = ex.runtime
        td = self.ident.trust_domain
        if runtime is None or not td or ex.ctx.server.mesh_tls is None:
            return _U
        ctls = runtime.tls.clusters.get(cluster.name)
        if ctls is None or len(ctls.identities) != 1:
            return _U
        addr, _, port = host.rpartition(":")
        if ctls.mode_for((addr, int(port) if port.isascii() and port.isdigit() else 0)) != "ISTIO_MUTUAL":
            return _U
        ins, sa = ctls.identities[0]
        return f"spiffe://{td}/ns/{ins}/sa/{sa}"

    def _destination_labels(
        self, ex: Exchange, claimed: str, principal: str | None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        ident = self.ident
        me = ident.workload
        caller = believed(Workload.from_header(claimed) if claimed else None, principal)
        mtls = principal is not None
        svc = ident.service_fqdn
        labels = {
            fields.REPORTER: self.reporter,
            **_side_labels("source", caller, principal or _U),
            **_side_labels("destination", me, ident.principal if mtls else _U),
            fields.DESTINATION_SERVICE: svc,
            fields.DESTINATION_SERVICE_NAME: ident.service,
            fields.DESTINATION_SERVICE_NAMESPACE: me.namespace,
            fields.REQUEST_PROTOCOL: fields.HTTP,
            fields.CONNECTION_SECURITY_POLICY: fields.MUTUAL_TLS if mtls else fields.NO_TLS,
            fields.GRPC_RESPONSE_STATUS: "",
        }
        attrs = {
            "source": {**_attrs(caller, principal or _U), "address": ex.dc.peer_ip},
            "destination": {**_attrs(me, ident.principal), "service": svc},
        }
        return labels, attrs

    # -- series ----------------------------------------------------------------------------------
    def _make(self, made: tuple[dict[str, str], dict[str, Any]], side: SidePolicy) -> Any:
        labels, attrs = made
        if not side.custom_metrics:
            return self.metrics.series(tuple(labels[n] for n in fields.ISTIO_STATIC_LABELS))
        attrs["node"] = {"id": self.ident.workload.name, "namespace": self.ident.workload.namespace}
        if any(m.per_request for m in side.metrics):
            return _PerRequest(self, labels, attrs, side)
        return self.series_with(labels, attrs, side, None)

    def series_with(
        self, labels: dict[str, str], attrs: dict[str, Any], side: SidePolicy, request: dict[str, Any] | None
    ) -> RequestSeries:
        """A series with the policy's overrides applied (``request``: the per-request attributes)."""
        targets: list[Any] = []
        for i, m in enumerate(side.metrics):
            targets.append(self._target(i, m, labels, attrs, request) if m.enabled else None)
        return RequestSeries((targets[0], targets[1], targets[2], targets[3]), self.metrics.buckets)

    def _target(
        self,
        i: int,
        m: MetricSettings,
        labels: dict[str, str],
        attrs: dict[str, Any],
        request: dict[str, Any] | None,
    ) -> tuple[Any, tuple[str, ...]]:
        values = dict(labels)
        for o in m.overrides:
            if o.operation == REMOVE:
                values.pop(o.name, None)
            elif o.per_request and request is None:
                continue
            else:
                values[o.name] = _evaluate(o.program, {**attrs, **(request or {})})
        names = [n for n in fields.ISTIO_STATIC_LABELS if n in values]
        names += sorted(
            n for n in values if n not in fields.ISTIO_STATIC_LABELS and n not in fields.ISTIO_DYNAMIC_LABELS
        )
        family = self.metrics.registry.variant(self.metrics.family(i), (*names, *fields.ISTIO_DYNAMIC_LABELS))
        return family, tuple(values[n] for n in names)


def _evaluate(program: Any, activation: dict[str, Any]) -> str:
    try:
        value = program.execute(activation)
    except Exception:  # a missing header or attribute: Envoy's CEL gives no value, Istio "unknown"
        return _U
    if isinstance(value, bool):
        return "true" if value else "false"
    return _U if value is None else str(value)


class _PerRequest:
    """A peer pair whose labels read the request: a RequestSeries per distinct set of values."""

    __slots__ = ("attrs", "by_values", "labels", "owner", "side")

    def __init__(
        self, owner: StatsRecorder, labels: dict[str, str], attrs: dict[str, Any], side: SidePolicy
    ) -> None:
        self.owner = owner
        self.labels = labels
        self.attrs = attrs
        self.side = side
        self.by_values: dict[tuple[str, ...], RequestSeries] = {}

    def record_for(self, request: dict[str, Any]) -> RequestSeries:
        act = {**self.attrs, **request}
        key = tuple(
            _evaluate(o.program, act) for m in self.side.metrics for o in m.overrides if o.per_request
        )
        s = self.by_values.get(key)
        if s is None:
            if len(self.by_values) >= MAX_SERIES:
                self.by_values.clear()
            s = self.by_values[key] = self.owner.series_with(self.labels, self.attrs, self.side, request)
        return s
