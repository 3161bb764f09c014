"""Where meshbus-telemetry sends spans: an OTLP/HTTP endpoint (the OpenTelemetry exporter) or a file.

Spans arrive from proxies as rows of the OpenTelemetry span fields (proxy/filters/spans.py) and are
made the SDK's ``ReadableSpan`` here, so the SDK's own exporters do the encoding: ``OTLPSpanExporter`` (protobuf over HTTP, opentelemetry-exporter-
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

from meshbus.telemetry.spanattrs import FACTS, http_attributes

_SCOPE = InstrumentationScope("meshbus.proxy")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def readable_spans(
    fields: Sequence[str], rows: Sequence[Sequence[Any]], resource: Resource
) -> list[ReadableSpan]:
    """SDK spans from a SpanBatch's rows (found by field name: a newer proxy may add fields)."""
    at = {name: i for i, name in enumerate(fields)}
    tid, sid, pid, name, kind = at["trace_id"], at["span_id"], at["parent_span_id"], at["name"], at["kind"]
    start, end, attrs, status, state = (
        at["start_ns"],
        at["end_ns"],
        at["attributes"],
        at["status_code"],
        at["tracestate"],
    )
    facts = all(f in at for f in FACTS)  # an older proxy sent the attributes themselves
    out = []
    for row in rows:
        if facts:
            attributes = http_attributes({name: row[i] for name, i in at.items()})
        else:
            attributes = dict(row[attrs] or {})
        trace_id = int(row[tid], 16)
        tracestate = TraceState.from_header([row[state]]) if row[state] else None
        parent_hex = row[pid]
        out.append(
            ReadableSpan(
                name=row[name],
                context=SpanContext(trace_id, int(row[sid], 16), False, _SAMPLED, tracestate),
                parent=SpanContext(trace_id, int(parent_hex, 16), True, _SAMPLED) if parent_hex else None,
                resource=resource,
                attributes=attributes,
                kind=SpanKind(row[kind]),
                status=Status(StatusCode(row[status])),
                start_time=row[start],
                end_time=row[end],
                instrumentation_scope=_SCOPE,
            )
        )
    return out


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
