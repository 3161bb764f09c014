"""The STATS phase of every request: trace context, Istio metrics and the access-log record.

Istio's stats and tracing are listener-wide HTTP filters in Envoy (the istio.stats filter and the
connection manager's tracing), not per-route ones: they see every request a listener handles,
including those no route matches (404 NR) and those a filter answers. So they are not entries of a
route's chain (proxy/filters/chain.py): the exchange calls its listener's `HopTelemetry` at two fixed
points, ``begin`` once the route is matched (the trace decision, before the route's filters run)
and ``done`` when the request has finished (metrics, the span's end, the access-log record), and
routes keep their empty chains and fast paths.

What each side records comes from the Telemetry policy of the runtime the request runs on
(proxy/build/telemetry_policy.py). Everything here is in memory: shipping happens off the request
path (proxy/mesh/telemetry_ship.py).

Filters that decide about a request leave what the access log should say in ``ctx.filter_state``:
the JWT filter its verified identity under ``request.auth`` (the record's ``request_principal``), any
filter fields under ``access_log`` (the record's ``metadata``: the authorization policy that decided).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.build.telemetry_policy import SidePolicy, TracingSettings
from meshbus.proxy.filters.stats import Identity, StatsRecorder
from meshbus.proxy.filters.tracing import HopTracer, TraceHop
from meshbus.telemetry.accesslog import (
    NULL_ACCESS_LOG,
    AccessLog,
    AccessLogger,
    AccessLogRecord,
    AccessLogTail,
)
from meshbus.telemetry.metrics import CounterChild, InternalMetrics, IstioMetrics, RequestSeries
from meshbus.telemetry.peer import PEER_HEADER, Workload

if TYPE_CHECKING:  # the exchange imports this module: typed only, for mypyc's native access
    from meshbus.proxy.adapters.exchange import Exchange
    from meshbus.proxy.core.routing import RequestView, Route

log = logging.getLogger(__name__)

_PROTOCOLS: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


def _protocol(version: str) -> str:
    # compiled, two str compares cost a fraction of a dict lookup (the version str is new per request)
    if version == "1.1":
        return "HTTP/1.1"
    return _PROTOCOLS.get(version) or "HTTP/" + version


class Observability:
    """The proxy's side of telemetry, shared by its listeners: who it is, the Istio metrics, and
    (in mesh mode, where spans have somewhere to go) the SDK spans."""

    def __init__(self, metrics: IstioMetrics, internal: InternalMetrics, namespace: str, labels: Any) -> None:
        self.ident = Identity(Workload.of("", namespace, labels or {}))
        self.metrics = metrics
        self.local_replies = internal.local_replies
        self.spans: Any = None  # proxy/filters/spans.py SpanRecorder, set by mesh mode
        # the server's access log (ProxyServer.access_log reads and sets it): kept here, a compiled
        # class, so each request reads it natively
        self.access_log: AccessLog = NULL_ACCESS_LOG
        self.listeners: list[HopTelemetry] = []

    def set_identity(self, workload: Workload, service: str, service_fqdn: str, spans: Any = None) -> None:
        ident = self.ident
        ident.workload = workload
        ident.service = service
        ident.service_fqdn = service_fqdn
        if spans is not None:
            self.spans = spans
        for hop in self.listeners:
            hop.identity_changed()

    def set_principal(self, principal: str) -> None:
        self.ident.set_principal(principal)
        for hop in self.listeners:
            hop.stats.policy = None  # the label sets name it: make them again


class HopTelemetry:
    """One listener's STATS phase: ``begin`` and ``done`` are called by the exchange."""

    __slots__ = (
        "_log_filter", "_log_on", "_p_cluster", "_p_line", "_p_runtime", "_runtime",
        "_side", "_t_cluster", "_t_route", "_tail", "_tracing", "direction", "ident", "local_replies", "obs", "peer",
        "peer_line", "server", "stats", "tracer",
    )  # fmt: skip

    def __init__(self, server: Any, direction: str) -> None:
        obs = server.observe
        self.server = server
        self.obs: Observability = obs
        self.direction = direction
        self.ident: Identity = obs.ident
        self.stats = StatsRecorder(direction, obs.metrics, obs.ident)
        self.tracer = HopTracer(direction == "inbound", obs.spans)
        self.local_replies: Any = obs.local_replies
        self.peer: list[tuple[str, str]] = []
        self.peer_line = b""
        # The last runtime's policy for this side, and the last (runtime, cluster)'s peer line: a
        # runtime is immutable (a new snapshot is a new one), so identity says when to look again.
        self._runtime: Any = None
        self._side: SidePolicy = SidePolicy()
        self._tracing: TracingSettings = self._side.tracing  # the side's, read once per policy (by name)
        # the side's access-log settings, read once per policy (attributes of plain dataclasses)
        self._log_on = False
        self._log_filter: Any = None
        self._p_runtime: Any = None
        self._p_cluster: Any = None
        self._p_line = b""
        # the access-log row's tail (accesslog.AccessLogTail) of the last (route, cluster): one tuple,
        # shared by the rows of the requests that have no filter fields to log
        self._t_route: Any = None
        self._t_cluster: Any = None
        self._tail: AccessLogTail = (None, None, None, None, None, direction)
        obs.listeners.append(self)
        self.identity_changed()

    def identity_changed(self) -> None:
        """The proxy learned who it is (mesh mode): new label sets, and the peer header the client
        side sends (meshbus.telemetry.peer)."""
        self.stats.policy = None
        self.tracer.spans = self.server.observe.spans
        self.tracer.identity(self.ident.workload.name, self.ident.service_fqdn)
        self._p_runtime = None
        if self.direction == "outbound":
            value = self.ident.workload.header_value()
            self.peer = [(PEER_HEADER, value)]
            self.peer_line = f"{PEER_HEADER}: {value}\r\n".encode("latin-1")

    def peer_line_for(self, ex: Exchange) -> bytes:
        """The peer header line for this request's upstream head: only to mesh workloads (a cluster
        whose endpoints have identities), never to services outside the mesh."""
        if not self.peer_line:
            return b""
        runtime = ex.runtime
        cluster = ex.cluster
        if runtime is not self._p_runtime or cluster is not self._p_cluster:
            ctls = runtime.tls.clusters.get(cluster.name) if cluster is not None else None
            self._p_line = self.peer_line if ctls is not None and ctls.identities else b""
            self._p_runtime = runtime
            self._p_cluster = cluster
        return self._p_line

    def upstream_headers(self, ex: Exchange, hop: TraceHop) -> list[tuple[str, str]]:
        """What this hop adds to a rebuilt upstream head: the peer header, the trace headers."""
        peer = self.peer if self.peer_line_for(ex) else []
        trace = hop.headers
        return peer + trace if trace is not None else peer

    def side(self, ex: Exchange) -> SidePolicy:
        runtime = ex.runtime or ex.ctx.live.runtime  # a reply before begin() read it
        if runtime is not self._runtime:
            side = self._side = runtime.telemetry.side(self.direction)
            self._tracing = side.tracing
            self._log_on = side.access_log.enabled
            self._log_filter = side.access_log.filter
            self._runtime = runtime
        return self._side

    def begin(self, ex: Exchange) -> TraceHop:
        try:
            self.side(ex)
            return self.tracer.begin(ex, self._tracing)
        except Exception as exc:  # a trace must never cost the request: go on without one
            log.error("trace start failed: %s: %s", type(exc).__name__, exc)
            return TraceHop("")

    def done(self, ex: Exchange, flags: str, duration: float) -> None:
        side = self.side(ex)
        found = self.stats.series(ex, side)
        # typed: compiled, ``record`` is a native call with native ints and floats, not one by name
        s: RequestSeries = (
            found
            if type(found) is RequestSeries
            else found.record_for(request_attributes(ex, flags, duration))
        )
        s.record(ex.status, duration, ex.bytes_in, ex.bytes_out, flags)
        if ex.resp is None and ex.status:
            self._local_reply(flags)
        hop: TraceHop | None = ex.tr
        if hop is not None and hop.span is not None:
            try:
                self.tracer.end(ex, hop, flags)
            except Exception as exc:  # a span must never cost the response
                log.error("span end failed: %s: %s", type(exc).__name__, exc)
        if not self._log_on:
            return
        sink = self.obs.access_log
        if sink is NULL_ACCESS_LOG:  # no access log is kept: not even a record is made
            return
        program = self._log_filter
        if program is not None and not _passes(program, ex, flags, duration):
            return
        # The peer's principal (mTLS sets it at the handshake): a native read from the HTTP/1 connection;
        # another stream is a Downstream protocol, read by name. A cache of the last connection's missed
        # on nearly every request when connections interleave (callgrind, 10 connections: 0.98 reads a request).
        dn = ex.dn
        principal = dn.peer_principal if dn is not None else ex.dc.peer_principal
        if isinstance(sink, AccessLogger):  # compiled: a direct call, not a method looked up by name
            log_access(sink, ex, flags, duration, hop, principal, self.tail(ex))
        else:  # another sink (contracts.AccessLogSink: tests' in-memory ones) takes records
            one = AccessLogger()
            log_access(one, ex, flags, duration, hop, principal, self.tail(ex))
            sink.log(AccessLogRecord.from_row(one.drain()[0]))

    def tail(self, ex: Exchange) -> AccessLogTail:
        """The request's access-log tail: the one of its route and cluster, made again only when they
        change, unless its filters left fields to log (a JWT's principal, the deciding policy)."""
        route: Route | None = ex.route
        cluster = ex.cluster
        if route is not self._t_route or cluster is not self._t_cluster:
            self._tail = (
                None,
                cluster.name if cluster is not None else None,
                route.name if route is not None else None,
                None,
                None,
                self.direction,
            )
            self._t_route = route
            self._t_cluster = cluster
        t = self._tail
        fs: dict[str, Any] | None = ex.filter_state
        if fs is not None:
            auth = fs.get("request.auth")  # proxy/filters/jwt_authn.py
            metadata = fs.get("access_log")  # fields filters add (chain.FilterContext)
            if auth is not None or metadata is not None:
                return (t[0], t[1], t[2], auth["principal"] if auth is not None else None, metadata, t[5])
        return t

    def _local_reply(self, flags: str) -> None:
        child: CounterChild = self.local_replies.labels(flags)
        child.value += 1


def log_access(
    out: AccessLogger,
    ex: Exchange,
    flags: str,
    duration: float,
    hop: TraceHop | None,
    principal: str | None,
    tail: AccessLogTail,
) -> None:
    """The request's access-log row (accesslog.AccessLogRow) to ``out``, with its connection's peer
    ``principal`` and ending with ``tail`` (`HopTelemetry.tail`): its 19 items as arguments, which a
    logger keeping columns stores without making the row (telemetry/logcolumns.py)."""
    head = ex.head
    # the three logged headers in one pass over the head's list as it is now (after filters and the
    # generated request id, as Envoy's %REQ()% reads them at log time), duplicates joined with ","
    # as the head's hdict has them: ~25 instructions a header where a dict get, mostly a miss, cost ~160
    xff: str | None = None
    agent: str | None = None
    rid: str | None = None
    for name, value in head.headers:
        n = len(name)
        if n == 10:
            if name == "user-agent":
                agent = value if agent is None else agent + "," + value
        elif n == 12:
            if name == "x-request-id":
                rid = value if rid is None else rid + "," + value
        elif n == 15 and name == "x-forwarded-for":
            xff = value if xff is None else xff + "," + value
    # typed (the exchange holds it as Any): compiled, its fields are read natively, not by name
    view: RequestView | None = ex.view
    version = head.version
    method: str | None = head.method
    path: str | None
    authority: str | None = ex.authority
    if view is not None:
        path = view.path
        source = view.source_ip  # the view's copy is read natively
    else:
        # refused before routing (no Host, a head that did not parse): what it lacks is absent, as
        # Envoy logs it, not an empty string
        method = method or None
        path = head.target or None
        authority = authority or None
        source = ex.dc.peer_ip
    out.add(
        ex.start,
        method,
        path,
        "HTTP/1.1" if version == "1.1" else _protocol(version),  # inline: a call costs more than the compare
        ex.status,
        flags,
        ex.details or ex.tls_failure,
        ex.bytes_in,
        ex.bytes_out,
        duration,
        xff,
        agent,
        rid,
        authority,
        ex.upstream_host,
        source,
        principal,
        hop.trace_id if hop is not None else None,
        tail,
    )


def request_attributes(ex: Exchange, flags: str, duration: float) -> dict[str, Any]:
    """Istio's per-request CEL attributes (meshbus.bus.config.cel.ATTRIBUTES), for the access-log
    filter and for metric labels that read the request."""
    head = ex.head
    hd = head.hdict
    view = ex.view
    path = view.path if view is not None else head.target
    cluster = ex.cluster
    return {
        "request": {
            "method": head.method,
            "path": path,
            "url_path": path.partition("?")[0],
            "host": ex.authority,
            "scheme": "http",
            "protocol": _protocol(head.version),
            "headers": hd,
            "id": hd.get("x-request-id", ""),
            "useragent": hd.get("user-agent", ""),
            "size": ex.bytes_in,
            "total_size": ex.bytes_in,
            "duration": duration,
        },
        "response": {
            "code": ex.status,
            "flags": flags,
            "code_details": ex.details or "",
            "size": ex.bytes_out,
            "total_size": ex.bytes_out,
            "grpc_status": "",
        },
        "connection": {"mtls": ex.dc.peer_principal is not None},
        "upstream": {
            "address": ex.upstream_host or "",
            "cluster": cluster.name if cluster is not None else "",
        },
        "source": {"address": ex.dc.peer_ip, "principal": ex.dc.peer_principal or ""},
    }


def _passes(program: Any, ex: Exchange, flags: str, duration: float) -> bool:
    try:
        return program.execute(request_attributes(ex, flags, duration)) is True
    except Exception:  # Envoy's CEL filter: an expression that cannot be evaluated does not match
        return False
