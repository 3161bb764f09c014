"""meshbus-telemetry (the Mixer role, without Mixer's per-request round trip): the collector process.

Layers:
- ``store``      (sans-IO) merged mesh-wide metric series from proxies' deltas; forgets silent proxies;
                 per-edge traffic of the last minutes for ``meshctl top`` and the graph.
- ``views``      (sans-IO) replicas' stats merged; top rows; the Kiali-shaped graph.
- ``exporters``  spans back into the OpenTelemetry SDK's form; OTLP/HTTP or JSON-lines export.
- ``gather``     scatter-gather of every replica's stats over the bus.
- ``http``       ``/metrics``, the web view (``web/``: page, script, style; no third-party code), API.
- ``service``    the bus wiring (queue group, stats, access-log stream, MeshConfig watch).

Data flow: proxies -> NATS (batches every second) -> ``service`` -> ``store`` -> ``/metrics`` and
stats; spans -> bounded queue -> exporter thread; access logs -> a JetStream stream directly.
Keep in sync: ARCHITECTURE.md "Observability", README "Telemetry".
"""
