"""meshbus.telemetry: telemetry conventions, and what proxies and control processes use to record them.

Layers (sans-IO unless noted):
- ``fields``      canonical log-field keys and Istio metric label names (single source of truth).
- ``metrics``     Registry of Counter/Gauge/Histogram families; ``IstioMetrics`` (Istio names, labels,
                  default buckets) with the per-request ``RequestSeries.record``; ``InternalMetrics``.
- ``exposition``  Prometheus text 0.0.4 and Envoy-like /stats (text and JSON) rendering.
- ``batch``       MetricBatch plain dicts (msgpack-able): ``snapshot``, ``DeltaTracker``, ``merge``.
- ``accesslog``   ``AccessLogRecord``, the bounded ``AccessLogger`` queue, ``NULL_ACCESS_LOG``, formats.
- ``tracing``     W3C traceparent/tracestate and B3 parsing, ``continue_trace`` for a proxied request.
- ``accesslog_writer`` (asyncio) drains the access-log queue off the request path into a sink.
- ``logging``     ``configure_logging`` for ``__main__`` modules (structlog behind stdlib logging).
- ``otel``        OpenTelemetry SDK TracerProvider with a bounded BatchSpanProcessor (never on the hot path).

Concurrency and backpressure contract: everything a request touches (``RequestSeries.record``,
``AccessLogger.log``, ``continue_trace``) runs on the proxy's event-loop thread, takes no lock, does no
I/O and formats nothing. Queues are bounded; what does not fit is dropped and counted in
``meshbus_telemetry_dropped_total{signal}``. Formatting, writing and shipping happen in background tasks.

Keep in sync: ARCHITECTURE.md "Observability", STYLE.md E9, reference/ecosystem.md sections 2 and 3.
"""
