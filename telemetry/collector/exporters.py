"""Where meshbus-telemetry sends spans: an OTLP/HTTP endpoint or a file.

Spans arrive from proxies as rows of the OpenTelemetry span fields (proxy/filters/spans.py). For a
MeshConfig ``opentelemetry`` provider or ``--otlp-endpoint`` they go by OTLP/HTTP: the request is
encoded straight from the rows and sent by the SDK's ``OTLPSpanExporter``'s client
(telemetry/collector/otlp_rows.py: the SDK's own encoder cost ~50 us a span); otherwise to
`JsonLinesExporter` (one object per line, as ``ReadableSpan.to_json()`` makes it), from the SDK's
``ReadableSpan`` made here (`readable_spans`). Both block: the service calls them in a worker
thread, behind a bounded queue (telemetry/collector/service.py).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from meshbus.telemetry.spanattrs import FACTS, http_attributes

SCOPE = InstrumentationScope("meshbus.proxy")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# looked up, not made, per span (a Status is never changed once made: spans can share one)
_KINDS = {k.value: k for k in SpanKind}
_STATUSES = {c.value: Status(c) for c in (StatusCode.UNSET, StatusCode.ERROR)}


_COLUMNS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "attributes",
            "status_code", "tracestate")  # fmt: skip


def columns(fields: Sequence[str]) -> list[int]:
    """Where a SpanBatch's rows hold the span fields (by name: a newer proxy may add fields)."""
    at = {name: i for i, name in enumerate(fields)}
    return [at[c] for c in _COLUMNS]


def has_facts(fields: Sequence[str]) -> bool:
    """Whether rows carry the request's facts (an older proxy sent the attributes themselves)."""
    return all(f in fields for f in FACTS)


def readable_spans(
    fields: Sequence[str], rows: Sequence[Sequence[Any]], resource: Resource
) -> list[ReadableSpan]:
    """SDK spans from a SpanBatch's rows (found by field name: a newer proxy may add fields)."""
    tid, sid, pid, name, kind, start, end, attrs, status, state = columns(fields)
    facts = has_facts(fields)
    names = list(fields)
    out = []
    for row in rows:
        if facts:
            attributes = http_attributes(dict(zip(names, row, strict=False)))
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
                kind=_KINDS.get(row[kind]) or SpanKind(row[kind]),
                status=_STATUSES.get(row[status]) or Status(StatusCode(row[status])),
                start_time=row[start],
                end_time=row[end],
                instrumentation_scope=SCOPE,
            )
        )
    return out


_resources: dict[frozenset[tuple[str, str]], Resource] = {}


def resource_of(attributes: Mapping[str, str]) -> Resource:
    """The SDK's ``Resource.create`` of a batch's resource, kept per attribute set (it runs the
    resource detectors: ~4% of the collector's CPU when made for every batch). A Resource is immutable."""
    key = frozenset(attributes.items())
    resource = _resources.get(key)
    if resource is None:
        if len(_resources) >= 1024:
            _resources.clear()  # bounded (one entry per proxy and resource)
        resource = _resources[key] = Resource.create(dict(attributes))
    return resource


def otlp_exporter(
    endpoint: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
) -> Any:
    """An OTLP/HTTP span exporter for ``endpoint`` (``http://host:4318/v1/traces``): the SDK's, fed
    requests encoded from rows (telemetry/collector/otlp_rows.py)."""
    from meshbus.telemetry.collector.otlp_rows import OtlpRowsExporter

    return OtlpRowsExporter(endpoint, headers, timeout)


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON object per line to ``path``: the object of the SDK's
    ``ReadableSpan.to_json()``, made by `span_json` (to_json re-encodes the span's resource through
    json for every span and formats with the json module: ~35 us a span, ~10x this)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        resources: dict[int, Any] = {}  # a batch's spans share their resource: its JSON made once
        lines = []
        for s in spans:
            resource = resources.get(id(s.resource))
            if resource is None:
                resource = resources[id(s.resource)] = json.loads(s.resource.to_json())
            lines.append(orjson.dumps(span_json(s, resource)) + b"\n")
        try:
            with self._lock, self.path.open("ab") as f:
                f.write(b"".join(lines))
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _context(ctx: SpanContext) -> dict[str, str]:
    return {
        "trace_id": f"0x{ctx.trace_id:032x}",
        "span_id": f"0x{ctx.span_id:016x}",
        "trace_state": repr(ctx.trace_state),
    }


_seconds: dict[int, str] = {}  # the seconds iso_time formatted: a batch's spans share a few


def iso_time(ns: int) -> str:
    """The SDK's ``ns_to_iso_str`` (to_json's times), to the character: ``2023-11-14T22:13:20.123457Z``,
    microseconds rounded half-even from ``ns / 1e9`` as datetime rounds them; it costs ~6 us (a
    datetime and strftime per call), this a fraction of that (each second's text is kept)."""
    x = ns / 1e9
    sec = math.floor(x)
    us = round((x - sec) * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    text = _seconds.get(sec)
    if text is None:
        if len(_seconds) >= 256:
            _seconds.clear()  # bounded (worker threads may clear it at once: both only lose the cache)
        text = _seconds[sec] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{us:06d}Z"


def _attributes(attributes: Any) -> dict[str, Any] | None:
    return None if attributes is None else dict(attributes)


def span_json(s: ReadableSpan, resource: Any) -> dict[str, Any]:
    """What ``s.to_json()`` writes, as a dict (``resource``: its resource's, decoded), in its key order."""
    status: dict[str, Any] = {"status_code": s.status.status_code.name}
    if s.status.description:
        status["description"] = s.status.description
    return {
        "name": s.name,
        "context": _context(s.context) if s.context else None,
        "kind": str(s.kind),
        "parent_id": f"0x{s.parent.span_id:016x}" if s.parent is not None else None,
        "start_time": iso_time(s.start_time) if s.start_time else None,
        "end_time": iso_time(s.end_time) if s.end_time else None,
        "status": status,
        "attributes": _attributes(s._attributes),  # to_json's: None stays None (.attributes makes it {})
        "events": [
            {"name": e.name, "timestamp": iso_time(e.timestamp), "attributes": _attributes(e.attributes)}
            for e in s.events
        ],
        "links": [{"context": _context(k.context), "attributes": _attributes(k.attributes)} for k in s.links],
        "resource": resource,
    }


def describe(exporter: Any) -> str:
    if isinstance(exporter, JsonLinesExporter):
        return f"file {exporter.path}"
    return f"OTLP/HTTP {getattr(exporter, 'endpoint', '?')}"
