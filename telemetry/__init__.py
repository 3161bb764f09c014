"""meshbus.telemetry: telemetry conventions, and what proxies and control processes use to record them.

Layers (sans-IO unless noted):
- ``fields``      canonical log-field keys and Istio metric label names (single source of truth).
- ``metrics``     Registry of Counter/Gauge/Histogram families; ``IstioMetrics`` (Istio names, labels,
                  default buckets) with the per-request ``RequestSeries.record``; ``InternalMetrics``.
- ``exposition``  Prometheus text 0.0.4 and Envoy-like /stats (text and JSON) rendering.
- ``accesslog``   ``AccessLogRecord``, the bounded ``AccessLogger`` queue, ``NULL_ACCESS_LOG``, formats.
- ``accesslog_writer`` (asyncio) drains the access-log queue off the request path into a sink.
- ``logging``     ``configure_logging`` for ``__main__`` modules (structlog behind stdlib logging).
- ``errors``      ``TelemetryError`` and its subclasses.
- ``tracecontext`` W3C traceparent/tracestate and B3 (single, multi): parse, new ids, what goes on.
- ``peer``        the workload descriptions Istio's labels carry, and the peer header sidecars exchange.
- ``delta``       what changed in a registry since the last shipped batch.
- ``collector/``  the ``meshbus-telemetry`` process (its own package doc); ``__main__`` runs it.

Concurrency and backpressure contract: everything a request touches (``RequestSeries.record``,
``AccessLogger.log``) runs on the proxy's event-loop thread, takes no lock, does no I/O and formats
nothing. Queues are bounded; what does not fit is dropped and counted in
``meshbus_telemetry_dropped_total{signal}``. Formatting and writing happen in a background task.

The proxy's STATS phase (proxy/filters/observe.py) uses these per request; proxy/mesh/telemetry_ship.py
ships the proxy's deltas, spans and access logs to ``meshbus-telemetry`` every second.

Keep in sync: ARCHITECTURE.md "Observability", STYLE.md E9, reference/ecosystem.md sections 2 and 3.
"""
