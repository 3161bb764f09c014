"""A SpanBatch's rows encoded straight to an OTLP ``ExportTraceServiceRequest`` (protobuf bytes).

The SDK's way (rows -> ``ReadableSpan`` -> ``encode_spans`` -> ``SerializePartialToString``) costs
meshbus-telemetry ~55 us of CPU per span, ~49 of them in ``encode_spans``: it builds a protobuf
``KeyValue`` and ``AnyValue`` per attribute (~1.1 us each with the upb backend, ~15 attributes a span).
Issue 13's budget for the whole collector is 0.02 vCPU per 1,000 mesh rps, i.e. ~10 us per request,
two spans a request at 100% sampling. So here each span is written in protobuf's wire format
(https://protobuf.dev/programming-guides/encoding/), the fields of opentelemetry-proto's
trace.proto v1 in field-number order, and an attribute's encoded ``KeyValue`` is kept per (key,
value): most attributes of a sidecar's spans repeat (method, host, port, status, cluster, node...).
What is sent once per batch (the resource, the scope) and any attribute value other than a str or
int is encoded by the SDK's own functions. The result parses to the message the SDK's encoder makes
of the same spans (tests/unit/telemetry/collector/test_otlp_rows.py compares them field for field).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from struct import Struct
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_key_value,
    _encode_resource,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import TraceState

from meshbus.telemetry.collector.exporters import SCOPE, columns, has_facts
from meshbus.telemetry.spanattrs import http_attributes

log = logging.getLogger(__name__)

Batch = tuple[Sequence[str], Sequence[Sequence[Any]], Resource]
"""A SpanBatch's field names, rows and resource."""

_U64: Final = Struct("<Q")
_U32: Final = Struct("<I")
# SpanFlags: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, and _IS_REMOTE_MASK for a remote parent (the
# SDK's _span_flags: a row's parent is the caller's span, remote)
_FLAGS_LOCAL: Final = b"\x85\x01" + _U32.pack(0x100)
_FLAGS_REMOTE: Final = b"\x85\x01" + _U32.pack(0x300)
# Status {code} (field 15); UNSET is an empty Status, which the SDK sends too
_STATUS: Final = {0: b"\x7a\x00", 1: b"\x7a\x02\x18\x01", 2: b"\x7a\x02\x18\x02"}
# Span.kind (field 6): the SDK's SpanKind value + 1 (0 is UNSPECIFIED in the proto)
_KINDS: Final = {k: bytes((0x30, k + 1)) for k in range(5)}
_CACHE_MAX: Final = 8192  # encoded attributes kept; cleared when full (a cache, never a leak)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _id(text: str, size: int) -> bytes:
    """A hex id as the SDK sends it: ``int(text, 16)`` in ``size`` big-endian bytes."""
    if len(text) == 2 * size:
        try:
            data = bytes.fromhex(text)
        except ValueError:
            data = b""
        if len(data) == size:
            return data
    return int(text, 16).to_bytes(size, "big")


_VARINTS: Final = [_varint(n) for n in range(1 << 14)]  # every length of one or two bytes


def _len_field(tag: bytes, data: bytes) -> bytes:
    n = len(data)
    return tag + (_VARINTS[n] if n < 16384 else _varint(n)) + data


def _str_attr(key: str, value: str) -> bytes:
    """Span.attributes (field 9) entry: KeyValue {key: 1, value: 2 AnyValue {string_value: 1}}."""
    any_value = _len_field(b"\x0a", value.encode())
    return _len_field(b"\x4a", _len_field(b"\x0a", key.encode()) + _len_field(b"\x12", any_value))


def _sdk_attr(key: str, value: Any) -> bytes:
    """An attribute by the SDK's encoder; b"" for one it cannot encode, which the SDK leaves out too
    (``_encode_attributes`` logs and skips it)."""
    try:
        return _len_field(b"\x4a", _encode_key_value(key, value).SerializeToString())
    except Exception as exc:
        log.error("Failed to encode key %s: %s", key, exc)
        return b""


class RowEncoder:
    """Encodes batches of span rows; keeps the encoded attributes it has seen (one per thread: the
    cache is not shared)."""

    def __init__(self) -> None:
        self._str: dict[tuple[str, str], bytes] = {}
        self._int: dict[tuple[str, int], bytes] = {}
        self._scope = _encode_instrumentation_scope(SCOPE).SerializeToString()

    def _attr(self, key: str, value: Any) -> bytes:
        t = type(value)
        if t is str:
            cache = self._str
            data = cache.get((key, value))
            if data is None:
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                try:
                    data = cache[(key, value)] = _str_attr(key, value)
                except UnicodeEncodeError:  # a lone surrogate: the SDK's encoder refuses it too
                    return _sdk_attr(key, value)
            return data
        if t is int:  # exactly int: True == 1, and a bool is not encoded as one
            icache = self._int
            data = icache.get((key, value))
            if data is None:
                if len(icache) >= _CACHE_MAX:
                    icache.clear()
                data = icache[(key, value)] = _sdk_attr(key, value)
            return data
        return _sdk_attr(key, value)

    def request(self, batches: Sequence[Batch]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` of the batches' rows, as the SDK's encoder
        makes it of their spans: a ResourceSpans per distinct resource (in the order first seen),
        one ScopeSpans in each, the spans in order."""
        groups: dict[Resource, list[bytes]] = {}
        for fields, rows, resource in batches:
            groups.setdefault(resource, []).extend(self.spans(fields, rows))
        out = []
        for resource, spans in groups.items():
            scope_spans = _len_field(b"\x0a", self._scope) + b"".join(spans)
            resource_spans = _len_field(b"\x0a", _encode_resource(resource).SerializeToString())
            resource_spans += _len_field(b"\x12", scope_spans)
            if resource.schema_url:
                resource_spans += _len_field(b"\x1a", resource.schema_url.encode())
            out.append(_len_field(b"\x0a", resource_spans))
        return b"".join(out)

    def spans(self, fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Each row as an encoded ScopeSpans.spans entry (its fields found by name, as
        exporters.readable_spans finds them)."""
        tid, sid, pid, name, kind, start, end, attrs, status, state = columns(fields)
        facts = has_facts(fields)
        names = list(fields)
        attr = self._attr
        strs = self._str
        u64 = _U64.pack
        spans = []
        for row in rows:
            attributes = http_attributes(dict(zip(names, row, strict=False))) if facts else (row[attrs] or {})
            parts = [b"\x0a\x10", _id(row[tid], 16), b"\x12\x08", _id(row[sid], 8)]
            if row[state]:
                # the SDK's: TraceState.from_header (which drops malformed entries), then k=v joined
                ts = TraceState.from_header([row[state]])
                text = ",".join(f"{k}={v}" for k, v in ts.items())
                if text:
                    parts.append(_len_field(b"\x1a", text.encode()))
            parent = row[pid]
            if parent:
                parts += (b"\x22\x08", _id(parent, 8))
            if row[name]:
                parts.append(_len_field(b"\x2a", row[name].encode()))
            parts.append(_KINDS[row[kind]])
            if row[start]:
                parts += (b"\x39", u64(row[start]))
            if row[end]:
                parts += (b"\x41", u64(row[end]))
            for k, v in attributes.items():
                data = strs.get((k, v)) if type(v) is str else None  # the common case, inline
                parts.append(data if data is not None else attr(k, v))
            parts += (_STATUS[row[status]], _FLAGS_REMOTE if parent else _FLAGS_LOCAL)
            spans.append(_len_field(b"\x12", b"".join(parts)))  # ScopeSpans.spans
        return spans


class OtlpRowsExporter:
    """The SDK's ``OTLPSpanExporter`` (its HTTP client: endpoint, headers, compression, retries,
    size limit) sending requests that `RowEncoder` made. Should a later SDK not have the client this
    reaches for, rows go the SDK's whole way (ReadableSpans, its encoder) instead."""

    def __init__(self, endpoint: str, headers: Mapping[str, str] | None, timeout: float | None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.endpoint = endpoint
        self.sdk = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers or {}), timeout=timeout)
        self.encoder = RowEncoder()
        self._client = getattr(self.sdk, "_client", None)
        self._limit: int | None = getattr(self.sdk, "_max_request_size", None)

    def export_rows(self, batches: Sequence[Batch]) -> bool:
        """One request for all of ``batches`` (a request costs ~1 ms of CPU in the HTTP client: ~2 us
        a span in a batch of 500, ~8 in one of 100)."""
        if self._client is None or not hasattr(self._client, "export"):
            from meshbus.telemetry.collector.exporters import readable_spans

            spans = [s for fields, rows, resource in batches for s in readable_spans(fields, rows, resource)]
            return self.sdk.export(spans).name == "SUCCESS"
        data = self.encoder.request(batches)
        if self._limit is not None and len(data) > self._limit:
            count = sum(len(rows) for _, rows, _ in batches)
            log.warning(
                "dropping %d spans: a request of %d bytes is over the limit %d", count, len(data), self._limit
            )
            return False
        return bool(self._client.export(data).success)

    def shutdown(self) -> None:
        self.sdk.shutdown()
