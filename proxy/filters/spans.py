"""Spans of sampled requests, one per hop, kept in memory in OpenTelemetry's data model.

Only sampled requests reach this module (the decision is made first, in proxy/filters/tracing.py,
with no object of this module made), so a request that is not sampled costs nothing here. A span
is an `OpenSpan` while its request runs; at the end it becomes one row (`ROW`): the
OpenTelemetry span fields (ids, kind, name, times, status, custom tags) and the request's facts
(method, target, authority, status, ...), in a bounded buffer that the mesh agent's shipper drains off the request path and sends
to meshbus-telemetry, where the facts become the stable HTTP semantic-convention attributes
(telemetry/spanattrs.py) and each row a span of an OTLP request, sent by the SDK's OTLP/HTTP
exporter (telemetry/collector/otlp_rows.py), or an SDK ``ReadableSpan`` for the JSON-lines file
(telemetry/collector/exporters.py). A full buffer drops the span and counts it
in ``meshbus_telemetry_dropped_total{signal="spans"}``.

Why rows and not the SDK's Tracer here: starting and ending a span through the SDK's Tracer costs
about 100 us of CPython per span (its Span validates every attribute, takes a lock, runs the
processor chain), an SDK ReadableSpan alone ~5 us, the row ~1 us; at 100% sampling a request makes
two spans, and a whole proxy hop costs ~50 us (bench/telemetry.py). The data model and the
exporter's transport are the SDK's; only its per-span bookkeeping stays out of the request path.
"""

from __future__ import annotations

from typing import Any, Final

from meshbus.telemetry.metrics import CounterChild

DEFAULT_CAPACITY: Final = 4096
SERVER: Final = 1  # opentelemetry.trace.SpanKind.SERVER
CLIENT: Final = 2  # opentelemetry.trace.SpanKind.CLIENT
STATUS_UNSET: Final = 0  # opentelemetry.trace.StatusCode
STATUS_ERROR: Final = 2

ROW: Final[tuple[str, ...]] = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "attributes",
    "status_code", "tracestate",
    # the request's facts, which meshbus-telemetry makes the stable HTTP semantic-convention
    # attributes (telemetry/spanattrs.py): a dict per span built in the proxy cost ~1 us per hop
    "method", "target", "authority", "protocol_version", "request_id", "user_agent", "peer_address",
    "peer_principal", "route", "port", "status", "response_flags", "upstream_host", "upstream_cluster",
    "node_id",
)  # fmt: skip
"""The fields of a span row, in order (ids as lowercase hex; ``parent_span_id`` "" for a root;
``attributes``: the span's custom tags only, or None)."""


class OpenSpan:
    """A span while its request runs (what the request itself says is read when it ends)."""

    __slots__ = ("attributes", "kind", "name", "parent_id", "span_id", "start_ns", "trace_id", "tracestate")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str,
        name: str,
        kind: int,
        start_ns: int,
        attributes: dict[str, Any] | None,
        tracestate: str,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.attributes = attributes
        self.tracestate = tracestate


class SpanRecorder:
    """Ended spans as rows, up to ``capacity``; ``drain()`` takes them (the shipper, on the event loop)."""

    __slots__ = ("capacity", "dropped", "rows")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, dropped: CounterChild | None = None) -> None:
        self.capacity = capacity
        self.rows: list[tuple[Any, ...]] = []
        """Tuples: the shipper packs them as columns (telemetry/rowcolumns.py, compiled for tuples)."""
        self.dropped = dropped if dropped is not None else CounterChild()

    def start(
        self,
        name: str,
        server: bool,
        trace_id: str,
        span_id: str,
        parent_id: str,
        tracestate: str | None,
        start_ns: int,
        attributes: dict[str, Any] | None,
    ) -> OpenSpan:
        """Span ``span_id`` of ``trace_id``, child of ``parent_id`` ("" for a new root)."""
        return OpenSpan(
            trace_id,
            span_id,
            parent_id,
            name,
            SERVER if server else CLIENT,
            start_ns,
            attributes,
            tracestate or "",
        )

    def end(self, span: OpenSpan, error: bool, end_ns: int, facts: list[Any]) -> None:
        """The span ends, with the request's ``facts`` (ROW's fields from ``method`` on): a row, or a
        drop when the buffer is full."""
        rows = self.rows
        if len(rows) >= self.capacity:
            self.dropped.value += 1
            return
        rows.append((
            span.trace_id, span.span_id, span.parent_id, span.name, span.kind, span.start_ns, end_ns,
            span.attributes, STATUS_ERROR if error else STATUS_UNSET, span.tracestate, *facts,
        ))  # fmt: skip

    def add(self, row: tuple[Any, ...]) -> None:
        """An ended span's whole row (ROW's fields in order), or a drop when the buffer is full: what
        `end` does, for a caller that built the row in one tuple (the tracer: one per span, not two)."""
        rows = self.rows
        if len(rows) >= self.capacity:
            self.dropped.value += 1
            return
        rows.append(row)

    def drain(self) -> list[tuple[Any, ...]]:
        out, self.rows = self.rows, []
        return out
