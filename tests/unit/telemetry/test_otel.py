from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshbus.telemetry.otel import make_tracer_provider

pytestmark = pytest.mark.unit


def test_provider_exports_through_a_bounded_batch_processor() -> None:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("reviews.default", exporter, max_queue_size=4, schedule_delay_ms=60_000)
    try:
        tracer = provider.get_tracer("meshbus.proxy")
        for i in range(10):
            with tracer.start_as_current_span(f"GET /r{i}"):
                pass
        assert provider.force_flush()
        spans = exporter.get_finished_spans()
        # a 4-slot queue: ending a span never blocks; spans beyond what the worker drained are dropped
        assert 1 <= len(spans) <= 10
        assert all(s.name.startswith("GET /r") for s in spans)
        assert spans[0].resource.attributes["service.name"] == "reviews.default"
    finally:
        provider.shutdown()
