"""OpenTelemetry SDK wiring for span export. Kept out of ``tracing`` so the request path never imports it.

The BatchSpanProcessor queue is bounded (``max_queue_size``); the SDK drops spans when it is full
rather than blocking the caller, and exports from its own thread.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

DEFAULT_MAX_QUEUE_SIZE: Final = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 512
DEFAULT_SCHEDULE_DELAY_MS: Final = 1000.0


def make_tracer_provider(
    service_name: str,
    exporter: SpanExporter,
    *,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
    schedule_delay_ms: float = DEFAULT_SCHEDULE_DELAY_MS,
    attributes: dict[str, str] | None = None,
) -> TracerProvider:
    """A TracerProvider (not installed globally) exporting through one bounded BatchSpanProcessor.

    The caller owns it: call ``provider.shutdown()`` on exit to flush (no atexit hook is registered).
    """
    resource = Resource.create({SERVICE_NAME: service_name, **(attributes or {})})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
            schedule_delay_millis=schedule_delay_ms,
        )
    )
    return provider
