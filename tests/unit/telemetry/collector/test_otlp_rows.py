"""meshbus-telemetry's OTLP requests made straight from span rows (telemetry/collector/otlp_rows.py)
are the message the SDK's encoder makes of the same spans (rows -> ReadableSpan -> encode_spans)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.telemetry.collector.exporters import readable_spans, resource_of
from meshbus.telemetry.collector.otlp_rows import RowEncoder

pytestmark = pytest.mark.unit

T = "4bf92f3577b34da6a3ce929d0e0e4736"
RESOURCE = {
    "service.name": "reviews.default",
    "service.namespace": "default",
    "k8s.workload.name": "reviews-v1",
}


def _facts(**over: Any) -> list[Any]:
    facts = {"method": "GET", "target": "/r?x=1", "authority": "r:9080", "protocol_version": "1.1",
             "request_id": "rid", "user_agent": "wrk", "peer_address": "10.0.0.3", "peer_principal": None,
             "route": "r", "port": 9080, "status": 200, "response_flags": "-", "upstream_host": "10.0.0.7:9080",
             "upstream_cluster": "outbound|9080||r", "node_id": "node"} | over  # fmt: skip
    return list(facts.values())


def _sdk(fields: list[str], rows: list[Any]) -> ExportTraceServiceRequest:
    return encode_spans(readable_spans(fields, rows, resource_of(RESOURCE)))


def _ours(
    fields: list[str], rows: list[list[Any]], encoder: RowEncoder | None = None
) -> ExportTraceServiceRequest:
    data = (encoder or RowEncoder()).request([(fields, rows, resource_of(RESOURCE))])
    return ExportTraceServiceRequest.FromString(data)


def _recorded() -> list[list[Any]]:
    spans = SpanRecorder()
    cases: list[tuple[str, str | None, dict[str, Any] | None, dict[str, Any]]] = [
        ("", None, None, {}),
        (
            "00f067aa0ba902b7",
            "k=v,o=x",
            {"team": "ü", "n": 3, "r": 0.5, "ok": True, "big": 2**70},
            {"status": 503},
        ),
        (
            "00f067aa0ba902b8",
            "bad key=,z=1",
            {"list": ["a", "b"]},
            {"status": 404, "user_agent": None, "route": None},
        ),
        (
            "",
            "",
            None,
            {"status": 0, "response_flags": "UF", "authority": "h", "peer_principal": "spiffe://x"},
        ),
        ("", None, None, {"method": "BREW", "target": "", "upstream_host": None, "upstream_cluster": None}),
    ]
    for i, (parent, state, tags, over) in enumerate(cases):
        span = spans.start(
            f"GET r{i}", i % 2 == 0, T, f"{i + 1:016x}", parent, state, 1_700_000_000_123_456_789 + i, tags
        )
        spans.end(span, i % 3 == 1, 1_700_000_000_987_654_321, _facts(**over))
    return spans.drain()


def test_a_request_from_rows_is_the_sdks_request() -> None:
    rows = _recorded()
    ours = _ours(list(ROW), rows)
    assert ours == _sdk(list(ROW), rows)
    spans = ours.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == [f"GET r{i}" for i in range(len(rows))]  # the rows' order
    assert spans[1].flags == 0x300 and spans[0].flags == 0x100  # a parent from the caller is remote


def test_cached_attributes_give_the_same_request_again() -> None:
    encoder = RowEncoder()
    rows = _recorded()
    first = encoder.request([(list(ROW), rows, resource_of(RESOURCE))])
    assert encoder.request([(list(ROW), rows, resource_of(RESOURCE))]) == first


def test_rows_of_an_older_proxy_with_the_attributes_made_and_other_ids_and_kinds() -> None:
    fields = list(ROW[:10])  # no facts: the attributes column holds the attributes themselves
    rows = [
        ["463ac35c9f6413ad", "a2fb4a1d1a96d312", "", "short trace id", 0, 5, 6, {"a": "b", "n": None}, 1, ""],
        [T, "1", "2", "", 4, 0, 0, None, 2, "k=v"],
        [T.upper(), "0" * 15 + "f", "", "x", 3, 1, 2, {}, 0, ""],
    ]
    assert _ours(fields, rows) == _sdk(fields, rows)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_value = st.one_of(
    _text, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(allow_nan=False), st.none()
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.booleans(),
    parent=st.sampled_from(["", "00f067aa0ba902b7"]),
    tags=st.none() | st.dictionaries(_text, _value, max_size=4),
    method=st.sampled_from(["GET", "POST", "X"]),
    target=_text,
    authority=st.sampled_from(["", "h", "h:80", "h:x", "[::1]:9"]),
    status=st.sampled_from([0, 200, 404, 503]),
    flags=st.sampled_from(["-", "UF", "URX"]),
    text=st.none() | _text,
)
def test_any_row_is_encoded_as_the_sdk_encodes_it(
    kind: bool, parent: str, tags: dict[str, Any] | None, method: str, target: str, authority: str,
    status: int, flags: str, text: str | None,
) -> None:  # fmt: skip
    spans = SpanRecorder()
    span = spans.start("n", kind, T, "00000000000000aa", parent, None, 10, tags)
    facts = _facts(method=method, target=target, authority=authority, status=status, response_flags=flags,
                   user_agent=text, peer_principal=text, route=text, upstream_host=text, node_id=text)  # fmt: skip
    spans.end(span, status >= 500, 20, facts)
    rows = spans.drain()
    assert _ours(list(ROW), rows) == _sdk(list(ROW), rows)


def test_batches_of_several_proxies_in_one_request_are_grouped_by_resource_as_the_sdk_groups_them() -> None:
    rows = _recorded()
    other = {**RESOURCE, "service.name": "ratings.default"}
    batches = [(list(ROW), rows[:2], resource_of(RESOURCE)), (list(ROW), rows[2:3], resource_of(other)),
               (list(ROW), rows[3:], resource_of(RESOURCE))]  # fmt: skip
    ours = ExportTraceServiceRequest.FromString(RowEncoder().request(batches))
    sdk = encode_spans([s for f, r, res in batches for s in readable_spans(f, r, res)])
    assert ours == sdk
    assert [len(rs.scope_spans[0].spans) for rs in ours.resource_spans] == [4, 1]  # the same proxy's together
