"""meshbus-telemetry's JSON-lines span file: each line is what the SDK's ``ReadableSpan.to_json()``
makes of the span (written by orjson, not through to_json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.telemetry.collector.exporters import JsonLinesExporter, iso_time, readable_spans, resource_of

pytestmark = pytest.mark.unit

T = "4bf92f3577b34da6a3ce929d0e0e4736"


def _rows() -> list[list[object]]:
    spans = SpanRecorder()
    for i, (parent, state, tags, status) in enumerate(
        [
            ("", None, None, 200),
            ("00f067aa0ba902b7", "k=v,o=x", {"team": "ü", "n": 3, "r": 0.5, "ok": True}, 503),
        ]
    ):
        span = spans.start(
            f"GET r{i}", i == 0, T, f"{i + 1:016x}", parent, state, 1_700_000_000_123_456_789, tags
        )
        facts = ["GET", "/r?x=1", "r:9080", "1.1", "rid", "wrk", "10.0.0.3", None, "r", 9080, status, "-",
                 "10.0.0.7:9080", "outbound|9080||r", "node"]  # fmt: skip
        spans.end(span, status >= 500, 1_700_000_000_987_654_321, facts)
    return spans.drain()


def test_each_line_is_what_the_sdks_to_json_makes_of_the_span(tmp_path: Path) -> None:
    resource = resource_of({"service.name": "reviews.default"})
    spans = readable_spans(list(ROW), _rows(), resource)
    ctx = SpanContext(int(T, 16), 7, False, TraceFlags(1))
    spans.append(  # what rows never carry, but the exporter takes: events, links, a status description
        ReadableSpan(
            name="other",
            context=ctx,
            resource=resource,
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, "it broke"),
            events=[Event("e", {"a": 1}, timestamp=1_700_000_000_000_000_001), Event("f", timestamp=5)],
            links=[Link(ctx, {"l": "x"}), Link(ctx)],
            start_time=1,
            end_time=2,
        )
    )
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    assert exporter.export(spans).name == "SUCCESS"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for line, span in zip(lines, spans, strict=True):
        assert json.loads(line) == json.loads(span.to_json(indent=None))
    assert json.loads(lines[1])["attributes"]["team"] == "ü"


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.integers(0, 4_102_444_800 * 10**9),  # up to 2100
        st.integers(1_700_000_000, 1_700_000_100).map(
            lambda s: s * 10**9 + 999_999_500
        ),  # rounds up a second
        st.integers(1_700_000_000 * 10**9, 1_700_000_000 * 10**9 + 10**6),
    )
)
def test_times_are_the_sdks_to_the_character(ns: int) -> None:
    assert iso_time(ns) == ns_to_iso_str(ns)


def test_a_batchs_resource_is_the_sdks_made_once_per_attribute_set() -> None:
    from opentelemetry.sdk.resources import Resource

    attrs = {"service.name": "reviews.default", "service.namespace": "default"}
    made = resource_of(attrs)
    assert made == Resource.create(attrs)
    assert resource_of(dict(reversed(list(attrs.items())))) is made  # kept: detectors run once
    assert (
        resource_of({**attrs, "service.name": "ratings.default"}).attributes["service.name"]
        == "ratings.default"
    )
