"""Micro-benchmark of the telemetry calls the proxy makes per request.

    .venv/bin/python bench/telemetry_record.py [--n 200000] [--repeat 5] [--json] [--bus]

Reports ns per call (best of ``repeat`` runs of ``n`` calls, loop overhead subtracted) for:
Istio request metrics (via a cached RequestSeries), building an AccessLogRecord and appending it,
the drop path of a full queue, and the sum of what one request costs; then the whole STATS phase of
one hop as the exchange calls it (proxy/filters/observe.py: trace decision, metrics, access-log
record), client side and server side, at the default 1% sampling and with the request sampled
(what a span costs a hop: the sampled figure less the other).
Off-path figures (still the proxy's CPU): JSON formatting, the bus's access-log rows and span rows
(what shipping over NATS costs per request: nothing else of it is per request), a Prometheus scrape.
meshbus-telemetry's CPU per span (500-span batches: rows decoded, then the OTLP request made from
the rows as it does, the SDK's way as it did, or the JSON-lines file's lines: best of 7, process CPU).
``--bus``: a sidecar's whole shipping cost per span and per access-log record over a real
nats-server (embedded): a second's worth drained, encoded, published and written to the socket.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from meshbus.bus import codec
from meshbus.bus.schemas.telemetry import AccessLogBatch, Source, SpanBatch, encode_rows
from meshbus.proxy.build.telemetry_policy import SidePolicy, TelemetryPolicy, TracingSettings
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.filters.observe import HopTelemetry, Observability
from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.telemetry.accesslog import AccessLogger, AccessLogRecord, format_json_lines, wire_row
from meshbus.telemetry.exposition import render_prometheus
from meshbus.telemetry.metrics import InternalMetrics, IstioMetrics, Registry, istio_static_labels
from meshbus.telemetry.peer import Workload

# The writer drains the queue every 200 ms; draining every 1024 records keeps the number of live records
# (and so the cyclic GC's work) near what a proxy at a few thousand requests/s holds.
DRAIN_MASK = 1023


def best_ns(fn: Callable[[int], None], n: int, repeat: int) -> float:
    def empty(k: int) -> None:
        for _ in range(k):
            pass

    def run(f: Callable[[int], None]) -> float:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time_ns()
            f(n)
            best = min(best, time.process_time_ns() - t0)
        return best / n

    return max(0.0, run(fn) - run(empty))


def _hop(server: bool, sampling: float, spans: SpanRecorder | None) -> tuple[HopTelemetry, Any]:
    """A listener's STATS phase and an exchange-shaped request for it (what observe.py reads)."""
    from meshbus.proxy.adapters.listener import LiveState
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import BootstrapConfig

    srv = ProxyServer.__new__(ProxyServer)  # only what the STATS phase reads: no loop, no listeners
    srv.live = LiveState()
    srv.pools = None  # type: ignore[assignment]
    srv.registry = Registry()
    srv.metrics = IstioMetrics(srv.registry)
    srv.internal = InternalMetrics(srv.registry)
    srv.observe = Observability(srv.metrics, srv.internal, "default", {})
    srv.access_log = AccessLogger(capacity=1 << 30)
    srv.mesh_tls = None
    policy = TelemetryPolicy(
        client=SidePolicy(TracingSettings(sampling)), server=SidePolicy(TracingSettings(sampling))
    )
    cluster = Cluster(
        "outbound|9080||reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", 9080,
        endpoints=[Endpoint("10.0.0.7", 9080, {"app": "reviews", "version": "v1"})],
    )  # fmt: skip
    srv.runtime = SimpleNamespace(telemetry=policy, tls=SimpleNamespace(clusters={}))
    srv.config = BootstrapConfig(config_path="")
    srv.observe.set_identity(Workload.of("productpage", "default", {"app": "productpage", "version": "v1"}, "productpage"),
                             "productpage", "productpage.default.svc.cluster.local", spans)  # fmt: skip
    tele = HopTelemetry(srv, "inbound" if server else "outbound")
    hdict = {"host": "reviews", "user-agent": "wrk", "x-request-id": "6f1c1e2a-8d1b-4f0e-9a43-1a2b3c4d5e6f"}
    if server:
        # the caller's decision: sampled when this side samples everything (a traced request's second hop)
        flags = "01" if sampling >= 1.0 else "00"
        hdict["traceparent"] = f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"
        hdict["x-meshbus-peer"] = Workload.of(
            "productpage", "default", {"app": "productpage"}, "productpage"
        ).header_value()
    from meshbus.proxy.adapters.exchange import Exchange
    from meshbus.proxy.adapters.listener import ListenerContext
    from meshbus.proxy.codec.http1 import RequestHead, ResponseHead
    from meshbus.proxy.core.routing import RequestView, Route

    srv.loop = None
    ctx = ListenerContext(srv, "inbound" if server else "outbound")
    ctx.tele = tele
    head = RequestHead("GET", "/reviews/0", "1.1", list(hdict.items()), hdict, True, False, 0, 0)
    dc = SimpleNamespace(peer_ip="10.0.0.3", peer_ip_bytes=b"10.0.0.3", peer_principal=None)
    ex = Exchange(dc, head, ctx)  # a real one: compiled, observe.py reads its fields natively
    ex.view = RequestView("GET", "/reviews/0", "reviews", hdict, "10.0.0.3")
    ex.route = Route("default", "reviews")
    ex.cluster = cluster
    ex.runtime = srv.runtime
    ex.upstream_host = "10.0.0.7:9080"
    ex.status = 200
    ex.bytes_out = 295
    ex.start = 1.7e9
    ex.authority = "reviews"
    ex.resp = ResponseHead(200, [], {}, True, 0, 295)
    return tele, ex


def stats_phase(n: int, repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, server, sampling in (
        ("client", False, 0.01),
        ("server", True, 0.01),
        ("client_sampled", False, 1.0),
        ("server_sampled", True, 1.0),
    ):
        spans = SpanRecorder(capacity=1 << 30)
        tele, ex = _hop(server, sampling, spans)
        log = tele.server.access_log

        def hop(
            k: int, tele: HopTelemetry = tele, ex: Any = ex, log: Any = log, spans: SpanRecorder = spans
        ) -> None:
            begin, done = tele.begin, tele.done
            for i in range(k):
                ex.tr = begin(ex)
                done(ex, "-", 12.5)
                if not i & DRAIN_MASK:
                    log.drain()
                    spans.drain()

        out[f"stats_phase_{label}_hop_ns"] = best_ns(hop, n // 4, repeat)
    return out


def _per_item_ns(fn: Callable[[], object], items: int, repeat: int = 7) -> float:
    """Process CPU ns per item of ``fn()``, best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time_ns()
        fn()
        best = min(best, time.process_time_ns() - t0)
    return best / items


def collector_per_span(rows: list[list[Any]]) -> dict[str, float]:
    """meshbus-telemetry's CPU per span, for 500-row batches as a sidecar ships them: the rows
    decoded, then made an OTLP request straight from the rows (what it does), the SDK's way
    (ReadableSpans, encode_spans: what it did), or the JSON-lines file's lines."""
    import tempfile

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from meshbus.bus.schemas.telemetry import unpack_rows
    from meshbus.telemetry.collector.exporters import JsonLinesExporter, readable_spans, resource_of
    from meshbus.telemetry.collector.otlp_rows import RowEncoder

    rows = (rows * (500 // len(rows) + 1))[:500]
    data, encoding = encode_rows(rows)
    resource = resource_of({"service.name": "productpage.default", "service.namespace": "default"})
    fields = list(ROW)
    encoder = RowEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        file = JsonLinesExporter(f"{tmp}/spans.jsonl")
        return {
            "collector_unpack_rows_ns_per_span": _per_item_ns(lambda: unpack_rows(data, encoding), 500),
            "collector_otlp_from_rows_ns_per_span": _per_item_ns(
                lambda: encoder.request([(fields, unpack_rows(data, encoding), resource)]), 500
            ),
            "collector_otlp_sdk_way_ns_per_span": _per_item_ns(
                lambda: encode_spans(
                    readable_spans(fields, unpack_rows(data, encoding), resource)
                ).SerializePartialToString(),
                500,
            ),
            "collector_jsonlines_ns_per_span": _per_item_ns(
                lambda: file.export(readable_spans(fields, unpack_rows(data, encoding), resource)), 500
            ),
        }


async def shipping_over_nats(rows: list[list[Any]], records: list[AccessLogRecord]) -> dict[str, float]:
    """A sidecar's shipping CPU per span and per access-log record over a real nats-server (embedded,
    nothing subscribed): one second's worth (4,000) drained, encoded, published, and written to the
    socket by the NATS client (``flush`` waits for that), process CPU, best of 7; and what ``--ship
    local`` in bench/telemetry.py does instead (drain and discard)."""
    import tempfile

    from meshbus.bus.connection import BusConnection, BusSettings
    from meshbus.bus.embedded import EmbeddedNats
    from meshbus.proxy.mesh.telemetry_ship import BusSink, TelemetryShipper

    per_second = 4000
    span_rows = (rows * (per_second // len(rows) + 1))[:per_second]
    recs = [r.row() for r in (records * (per_second // len(records) + 1))[:per_second]]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(port=0, store_dir=tmp) as nats:
        bus = BusConnection(BusSettings(url=nats.url, name="bench-record"))
        await bus.connect()
        spans = SpanRecorder(capacity=1 << 30)
        shipper = TelemetryShipper(bus, Source("n"), Registry(), spans, lambda _s: None)
        sink = BusSink(bus, Source("n"), None)

        async def timed(fill: Callable[[], None], ship: Callable[[], Any]) -> float:
            best = float("inf")
            for _ in range(7):
                fill()
                t0 = time.process_time_ns()
                await ship()
                await bus.nc.flush()
                best = min(best, time.process_time_ns() - t0)
            return best / per_second

        def fill() -> None:
            spans.rows = list(span_rows)

        out = {
            "ship_spans_bus_ns_per_span": await timed(fill, shipper._ship_spans),
            "ship_records_bus_ns_per_record": await timed(lambda: None, lambda: sink.write_rows(recs)),
        }
        await bus.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bus", action="store_true", help="also ship over a real nats-server (embedded)")
    args = ap.parse_args()
    n, repeat = args.n, args.repeat

    registry = Registry()
    istio = IstioMetrics(registry)
    internal = InternalMetrics(registry)
    static = istio_static_labels(
        reporter="source",
        source_workload="productpage-v1",
        source_workload_namespace="default",
        source_app="productpage",
        destination_service="reviews.default.svc.cluster.local",
        destination_service_name="reviews",
        destination_service_namespace="default",
        request_protocol="http",
    )
    series = istio.series(static)
    access = AccessLogger(capacity=n + 1, dropped=internal.telemetry_dropped.labels("access_log"))
    full = AccessLogger(capacity=1)
    full.log(AccessLogRecord(0.0))

    def metrics_series(k: int) -> None:
        rec = series.record
        for _ in range(k):
            rec(200, 12.5, 0, 295)

    def make_record() -> AccessLogRecord:
        return AccessLogRecord(
            start_time=1.7e9,
            method="GET",
            path="/reviews/0",
            protocol="HTTP/1.1",
            response_code=200,
            bytes_received=0,
            bytes_sent=295,
            duration_ms=12.5,
            upstream_service_time=11.0,
            user_agent="curl/8.5",
            request_id="6f1c1e2a-8d1b-4f0e-9a43-1a2b3c4d5e6f",
            authority="reviews:9080",
            upstream_host="10.0.0.7:9080",
            upstream_cluster="outbound|9080||reviews.default.svc.cluster.local",
            route_name="default",
            downstream_remote_address="10.0.0.3:51234",
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        )

    def fill_record() -> AccessLogRecord:
        # the pattern the proxy is advised to use: create at request start, fill as the request goes
        r = AccessLogRecord(1.7e9)
        r.method = "GET"
        r.path = "/reviews/0"
        r.protocol = "HTTP/1.1"
        r.response_code = 200
        r.bytes_sent = 295
        r.duration_ms = 12.5
        r.upstream_service_time = 11.0
        r.user_agent = "curl/8.5"
        r.request_id = "6f1c1e2a-8d1b-4f0e-9a43-1a2b3c4d5e6f"
        r.authority = "reviews:9080"
        r.upstream_host = "10.0.0.7:9080"
        r.upstream_cluster = "outbound|9080||reviews.default.svc.cluster.local"
        r.route_name = "default"
        r.downstream_remote_address = "10.0.0.3:51234"
        r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        return r

    def accesslog_append(k: int) -> None:
        log = access.log
        for i in range(k):
            log(make_record())
            if not i & DRAIN_MASK:
                access.drain()
        access.drain()

    def accesslog_fill_append(k: int) -> None:
        log = access.log
        for i in range(k):
            log(fill_record())
            if not i & DRAIN_MASK:
                access.drain()
        access.drain()

    def accesslog_append_only(k: int) -> None:
        log = access.log
        r = make_record()
        for _ in range(k):
            log(r)
        access.drain()

    def accesslog_drop(k: int) -> None:
        log = full.log
        r = make_record()
        for _ in range(k):
            log(r)

    def per_request(k: int) -> None:
        rec = series.record
        log = access.log
        for i in range(k):
            rec(200, 12.5, 0, 295)
            log(fill_record())
            if not i & DRAIN_MASK:
                access.drain()
        access.drain()

    results = {
        "metrics_record_series_ns": best_ns(metrics_series, n, repeat),
        "accesslog_build_kwargs_and_append_ns": best_ns(accesslog_append, n, repeat),
        "accesslog_build_fill_and_append_ns": best_ns(accesslog_fill_append, n, repeat),
        "accesslog_append_only_ns": best_ns(accesslog_append_only, n, repeat),
        "accesslog_drop_when_full_ns": best_ns(accesslog_drop, n, repeat),
        "per_request_metrics_plus_accesslog_fill_ns": best_ns(per_request, n, repeat),
    }

    results.update(stats_phase(n, repeat))

    # Off the request path.
    batch = [make_record() for _ in range(10_000)]
    t0 = time.process_time_ns()
    format_json_lines(batch)
    results["accesslog_json_format_ns_per_record"] = (time.process_time_ns() - t0) / len(batch)
    t0 = time.process_time_ns()
    data, encoding = encode_rows([wire_row(r.row()) for r in batch])
    codec.encode(AccessLogBatch(Source("n"), [], data, len(batch), encoding))
    results["accesslog_bus_rows_ns_per_record"] = (time.process_time_ns() - t0) / len(batch)
    spans = SpanRecorder(capacity=1 << 30)
    tele, ex = _hop(False, 1.0, spans)
    for _ in range(2000):
        ex.tr = tele.begin(ex)
        tele.done(ex, "-", 12.5)
    rows = spans.drain()
    t0 = time.process_time_ns()
    data, encoding = encode_rows(rows)
    codec.encode(SpanBatch(Source("n"), {}, "", list(ROW), data, len(rows), encoding))
    results["spans_bus_rows_ns_per_span"] = (time.process_time_ns() - t0) / len(rows)
    for code in range(200, 600, 4):  # ~100 series per request metric
        series.record(code, 1.0, 1, 1)
    t0 = time.process_time_ns()
    text = render_prometheus(registry)
    results["prometheus_render_ms"] = (time.process_time_ns() - t0) / 1e6
    results["prometheus_render_series"] = sum(len(f) for f in registry.families())
    results["prometheus_render_bytes"] = len(text)

    results.update(collector_per_span(rows))
    if args.bus:
        import uvloop

        results.update(uvloop.run(shipping_over_nats(rows, batch)))

    if args.json:
        json.dump({k: round(v, 1) for k, v in results.items()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"python {sys.version.split()[0]}, n={n}, best of {repeat}")
        for k, v in results.items():
            print(f"{k:45s} {v:12.1f}")


if __name__ == "__main__":
    main()
