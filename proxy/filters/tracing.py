"""Trace context through one listener (the tracing filter's part of the STATS phase).

Per request, in this order, before any SDK object exists:

1. read the caller's context (W3C traceparent/tracestate, B3 single or multi: telemetry/tracecontext.py);
2. decide: the caller's sampling decision when it sent one, else a random draw against the side's
   ``randomSamplingPercentage`` (1% by default);
3. only when sampled (and span reporting is on) start a span (proxy/filters/spans.py), SERVER on the
   inbound listener and CLIENT on the outbound one, child of the caller's span, and send the new span
   id upstream;
   otherwise pass the caller's headers through untouched or, when none came, start a context (new
   trace id, the decision in its flags) so every hop after this one keeps both.

The ``x-request-id`` is kept as received (the listener makes one when none came). The span is named
``{method} {route}``; it ends when the exchange finishes (`end`), as a row of the request's facts
that meshbus-telemetry makes the stable HTTP semantic-convention attributes (telemetry/spanattrs.py). A request that is not sampled costs an id or two and a header line.
"""

from __future__ import annotations

import random
from time import time_ns
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.build.telemetry_policy import TracingSettings
from meshbus.proxy.filters.spans import STATUS_ERROR, STATUS_UNSET, OpenSpan, SpanRecorder
from meshbus.telemetry.tracecontext import (
    NEW_TRACES,
    SAMPLED,
    UNDECIDED,
    W3C,
    extract,
    new_span_id,
    propagation_headers,
)

if TYPE_CHECKING:  # the exchange imports this module: typed only, for mypyc's native access
    from meshbus.proxy.adapters.exchange import Exchange
    from meshbus.proxy.core.routing import RequestView, Route

_rand: Final = random.random
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class TraceHop:
    """One request's trace on this hop: ``trace_id`` (always: the access log's), the ``span`` when
    sampled, and what the router changes upstream: ``strip`` the caller's trace headers, add
    ``line`` (head lines) or ``headers`` (for a rebuilt head; made only when asked for)."""

    __slots__ = ("fmt", "line", "parent_id", "sampled", "span", "span_id", "strip", "trace_id")

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.span: OpenSpan | None = None
        self.strip = False
        self.line = b""
        self.fmt = W3C
        self.span_id = ""
        self.parent_id = ""
        self.sampled = False

    @property
    def headers(self) -> list[tuple[str, str]] | None:
        if not self.line:
            return None
        return propagation_headers(self.fmt, self.trace_id, self.span_id, self.parent_id, self.sampled)


class HopTracer:
    """Trace decisions and spans of one listener (``server``: the inbound side)."""

    __slots__ = (
        "_dc", "_dc_principal", "_name", "_name_method", "_name_route", "_report", "_sampling", "_settings",
        "_tagged", "node", "server", "service_fqdn", "spans",
    )  # fmt: skip

    def __init__(self, server: bool, spans: SpanRecorder | None) -> None:
        self.server = server
        self.spans = spans  # None: no spans at all (the decision is still propagated)
        # This proxy's workload name (the span rows' node) and service, kept here by
        # HopTelemetry.identity_changed: read per span, they were four attribute lookups away.
        self.node = ""
        self.service_fqdn = ""
        # The last span name made, for its route and method: a listener's spans mostly share one.
        self._name_route: Any = None
        self._name_method = ""
        self._name = ""
        # The last TracingSettings' fields (a frozen dataclass's attributes are looked up by name)
        self._settings: TracingSettings | None = None
        self._sampling = 0.0
        self._report = False
        self._tagged = False
        # the last span's connection and its peer's principal (set once, at the mTLS handshake, before
        # any request): read by name (a Downstream protocol), so once per connection
        self._dc: Any = None
        self._dc_principal: str | None = None

    def identity(self, node: str, service_fqdn: str) -> None:
        self.node = node
        self.service_fqdn = service_fqdn
        self._name_route = None

    def begin(self, ex: Exchange, settings: TracingSettings) -> TraceHop:
        if settings is not self._settings:
            self._settings = settings
            self._sampling = settings.sampling
            self._report = settings.report
            self._tagged = bool(settings.literal_tags or settings.header_tags)
        hd: dict[str, str] = ex.head.hdict
        inc = extract(hd)
        spans = self.spans
        if inc is None:
            sampled = _rand() < self._sampling
            # the common case: no caller's context, W3C out
            trace_id, span_id, line = NEW_TRACES.take(sampled)
            hop = TraceHop(trace_id)
            if sampled and self._report and spans is not None:
                hop.span = spans.start(
                    self.span_name(ex), self.server, trace_id, span_id, "", None, int(ex.start * 1e9),
                    custom_tags(ex, settings) if self._tagged else None,
                )  # fmt: skip
            hop.span_id = span_id
            hop.sampled = sampled
            hop.line = line
            return hop
        s = inc.sampled
        sampled = _rand() < self._sampling if s == UNDECIDED else s == SAMPLED
        hop = TraceHop(inc.trace_id)
        parent = inc.span_id
        if sampled and self._report and spans is not None:
            span_id = new_span_id()
            hop.span = spans.start(
                self.span_name(ex),
                self.server,
                hop.trace_id,
                span_id,
                parent,
                inc.tracestate,
                int(ex.start * 1e9),
                custom_tags(ex, settings) if self._tagged else None,
            )
        elif parent and s != UNDECIDED:
            return hop  # not ours to record: the caller's headers go on as they came
        else:
            span_id = new_span_id()
        fmt = inc.fmt
        hop.strip = True
        hop.fmt = fmt
        hop.span_id = span_id
        hop.parent_id = parent
        hop.sampled = sampled
        if fmt == W3C:
            hop.line = f"traceparent: 00-{hop.trace_id}-{span_id}-{'01' if sampled else '00'}\r\n".encode()
        else:
            hop.line = "".join(
                f"{n}: {v}\r\n" for n, v in propagation_headers(fmt, hop.trace_id, span_id, parent, sampled)
            ).encode("latin-1")
        return hop

    def end(self, ex: Exchange, hop: TraceHop, flags: str) -> None:
        span = hop.span
        spans = self.spans
        if span is None or spans is None:
            return
        status = ex.status
        # Semconv: 5xx is an error on both sides, 4xx on the client side only; no response is one too.
        error = status >= 500 or status == 0 or (status >= 400 and not self.server)
        head = ex.head
        hd = head.hdict
        # typed (the exchange holds them as Any): compiled, their fields are read natively, not by name
        view: RequestView | None = ex.view
        route: Route | None = ex.route
        cluster = ex.cluster
        dc = ex.dc
        if dc is not self._dc:
            self._dc_principal = dc.peer_principal
            self._dc = dc
        # spans.py's ROW in one tuple: the span's fields, then the request's facts
        spans.add((
            span.trace_id, span.span_id, span.parent_id, span.name, span.kind, span.start_ns, time_ns(),
            span.attributes, STATUS_ERROR if error else STATUS_UNSET, span.tracestate,
            head.method, view.path if view is not None else head.target, ex.authority, head.version,
            hd.get("x-request-id", ""), hd.get("user-agent"), ex.peer_ip, self._dc_principal,
            route.name if route is not None else None, cluster.port if cluster is not None else 0, status,
            flags, ex.upstream_host, cluster.name if cluster is not None else None, self.node,
        ))  # fmt: skip

    def span_name(self, ex: Exchange) -> str:
        """``{method} {route}`` (`span_name`), the last one kept: same route, same method, same name."""
        route = ex.route
        method = ex.head.method
        if route is not None and route is self._name_route and method == self._name_method:
            return self._name
        name = span_name(ex, self.server)
        self._name_route = route
        self._name_method = method
        self._name = name
        return name


def span_name(ex: Exchange, server: bool) -> str:
    method = ex.head.method
    if method not in _KNOWN_METHODS:
        method = "HTTP"
    route = ex.route
    if route is None:
        return method
    name = route.name if route.name and route.name != "default" else ""
    if not name:
        name = ex.ctx.tele.ident.service_fqdn if server else route.virtual_host
    return f"{method} {name}"


def custom_tags(ex: Exchange, settings: TracingSettings) -> dict[str, Any] | None:
    """The span's custom tags (Telemetry ``customTags``: literal and header), or None."""
    if not settings.literal_tags and not settings.header_tags:
        return None
    hd = ex.head.hdict
    attrs: dict[str, Any] = dict(settings.literal_tags)
    for tag in settings.header_tags:
        v = hd.get(tag.value, tag.default)
        if v is not None:
            attrs[tag.name] = v
    return attrs
