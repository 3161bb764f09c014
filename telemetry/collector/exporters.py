"""Where meshbus-telemetry sends spans: an OTLP/HTTP endpoint (the OpenTelemetry exporter) or a file.

Spans arrive from proxies as `SpanData` and are turned back into the SDK's ``ReadableSpan``, so the
SDK's own exporters do the encoding: ``OTLPSpanExporter`` (protobuf over HTTP, opentelemetry-exporter-
otlp-proto-http) for a MeshConfig ``opentelemetry`` provider or ``--otlp-endpoint``, and
`JsonLinesExporter` (one ``ReadableSpan.to_json()`` object per line) otherwise. Both block: the
service calls them in a worker thread, behind a bounded queue (telemetry/collector/service.py).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from meshbus.bus.schemas.telemetry import SpanData

_SCOPE = InstrumentationScope("meshbus.proxy")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def readable_span(data: SpanData, resource: Resource) -> ReadableSpan:
    """A span as the SDK would have handed it to an exporter in the proxy."""
    state = TraceState.from_header([data.tracestate]) if data.tracestate else None
    trace_id = int(data.trace_id, 16)
    ctx = SpanContext(trace_id, int(data.span_id, 16), False, _SAMPLED, state)
    parent = (
        SpanContext(trace_id, int(data.parent_span_id, 16), True, _SAMPLED) if data.parent_span_id else None
    )
    return ReadableSpan(
        name=data.name,
        context=ctx,
        parent=parent,
        resource=resource,
        attributes=dict(data.attributes),
        kind=SpanKind(data.kind),
        status=Status(StatusCode(data.status_code)),
        start_time=data.start_ns,
        end_time=data.end_ns,
        instrumentation_scope=_SCOPE,
    )


def resource_of(attributes: Mapping[str, str]) -> Resource:
    return Resource.create(dict(attributes))


def otlp_exporter(
    endpoint: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
) -> SpanExporter:
    """The OpenTelemetry OTLP/HTTP span exporter for ``endpoint`` (``http://host:4318/v1/traces``)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, headers=dict(headers or {}), timeout=timeout)


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON object (the SDK's ``to_json``) per line to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(s.to_json(indent=None) + "\n" for s in spans)
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def describe(exporter: Any) -> str:
    if isinstance(exporter, JsonLinesExporter):
        return f"file {exporter.path}"
    return f"OTLP/HTTP {getattr(exporter, '_endpoint', '?')}"
