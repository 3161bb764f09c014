"""The OpenTelemetry SDK side of tracing: one span per sampled request and hop, kept in memory.

Only sampled requests reach this module (the decision is made first, in proxy/filters/tracing.py,
without any SDK object), so a request that is not sampled costs nothing here. Ended spans go to a
bounded buffer (`SpanBuffer`, an SDK SpanProcessor); the mesh agent's shipper drains it off the
request path and publishes batches to meshbus-telemetry, which exports them (OTLP/HTTP or a file).
A full buffer drops the span and counts it in ``meshbus_telemetry_dropped_total{signal="spans"}``.

The SDK's own sampler is ALWAYS_ON: by the time a span is started, it has been decided.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from meshbus.telemetry.metrics import CounterChild

DEFAULT_CAPACITY: Final = 4096
SERVER_KIND: Final = SpanKind.SERVER
CLIENT_KIND: Final = SpanKind.CLIENT
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_ERROR: Final = Status(StatusCode.ERROR)


class SpanBuffer(SpanProcessor):
    """Ended spans, up to ``capacity``; ``drain()`` takes them (the shipper, on the event loop)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, dropped: CounterChild | None = None) -> None:
        self.capacity = capacity
        self.spans: list[ReadableSpan] = []
        self.dropped = dropped if dropped is not None else CounterChild()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if len(self.spans) < self.capacity:
            self.spans.append(span)
        else:
            self.dropped.value += 1

    def drain(self) -> list[ReadableSpan]:
        out, self.spans = self.spans, []
        return out

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SdkSpans:
    """A TracerProvider for this proxy (resource: its service, namespace, workload) over a SpanBuffer."""

    def __init__(self, resource: dict[str, str], buffer: SpanBuffer) -> None:
        self.buffer = buffer
        self.provider = TracerProvider(resource=Resource.create(resource), sampler=ALWAYS_ON)
        self.provider.add_span_processor(buffer)
        self.tracer = self.provider.get_tracer("meshbus.proxy")

    def start(
        self,
        name: str,
        server: bool,
        trace_id: str,
        parent_id: str,
        tracestate: str | None,
        start_ns: int,
        attributes: dict[str, Any],
    ) -> Any:
        """A started span, child of (trace_id, parent_id) when a caller sent them, else a new root."""
        context = None
        if parent_id:
            state = TraceState.from_header([tracestate]) if tracestate else None
            parent = SpanContext(int(trace_id, 16), int(parent_id, 16), True, _SAMPLED, state)
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        return self.tracer.start_span(
            name,
            context=context,
            kind=SERVER_KIND if server else CLIENT_KIND,
            attributes=attributes,
            start_time=start_ns,
        )

    @staticmethod
    def ids(span: Any) -> tuple[str, str]:
        """(trace id, span id) as hex."""
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    @staticmethod
    def end(span: Any, attributes: dict[str, Any], error: bool, end_ns: int) -> None:
        span.set_attributes(attributes)
        if error:
            span.set_status(_ERROR)
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        self.provider.shutdown()
