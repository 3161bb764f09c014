"""meshbus-telemetry's merged series: deltas add up, silent proxies are forgotten, text is valid."""

from __future__ import annotations

import pytest

from meshbus.bus.schemas.telemetry import FamilyDelta, MetricBatch, Source
from meshbus.telemetry import fields
from meshbus.telemetry.collector.store import MetricStore
from meshbus.telemetry.collector.views import kiali_graph, merge, top_rows
from meshbus.telemetry.metrics import ISTIO_DEFAULT_BUCKETS

from ..promtext import check_histogram, parse

pytestmark = pytest.mark.unit

NAMES = list(fields.ISTIO_REQUEST_LABELS)


def labels(reporter: str, src: str, dst: str, code: str = "200", mtls: bool = True) -> list[str]:
    values = {n: "unknown" for n in NAMES}
    values.update(
        reporter=reporter, source_workload=src, source_workload_namespace="default", destination_workload=dst,
        destination_workload_namespace="default", destination_service="reviews.default.svc.cluster.local",
        response_code=code, response_flags="-", grpc_response_status="",
        connection_security_policy="mutual_tls" if mtls else "unknown",
    )  # fmt: skip
    return [values[n] for n in NAMES]


def batch(
    node: str, seq: int, n: int, code: str = "200", dst: str = "reviews-v1", ms: float = 3.0
) -> MetricBatch:
    buckets = [0] * (len(ISTIO_DEFAULT_BUCKETS) + 1)
    buckets[2] = n  # 1 < ms <= 5
    lv = labels("destination", "productpage-v1", dst, code)
    return MetricBatch(
        Source(node, "reviews", "default", dst),
        seq,
        [
            FamilyDelta("istio_requests_total", "counter", "requests", NAMES, [], [[lv, n]]),
            FamilyDelta(
                "istio_request_duration_milliseconds",
                "histogram",
                "duration",
                NAMES,
                list(ISTIO_DEFAULT_BUCKETS),
                [[lv, buckets, n * ms]],
            ),
        ],
    )


def test_deltas_from_several_proxies_add_up_and_render_valid_text() -> None:
    s = MetricStore(grace=30)
    s.ingest(batch("a", 1, 3), 100.0)
    s.ingest(batch("b", 1, 2), 100.0)  # another proxy, the same series
    s.ingest(batch("a", 2, 5), 101.0)
    fams = parse(s.render())
    [(_, lab, v)] = fams["istio_requests_total"].samples
    assert v == 10 and lab["destination_workload"] == "reviews-v1"
    [entry] = check_histogram(fams["istio_request_duration_milliseconds"]).values()
    assert entry["count"] == 10 and entry["sum"] == 30.0


def test_a_silent_proxy_is_forgotten_after_the_grace_period() -> None:
    s = MetricStore(grace=5)
    s.ingest(batch("a", 1, 3), 100.0)
    s.ingest(batch("b", 1, 2, dst="reviews-v2"), 100.0)
    s.ingest(MetricBatch(Source("b"), 2), 104.0)  # b keeps beating (an empty batch)
    assert s.expire(104.0) == []
    assert s.expire(106.0) == ["a"]
    text = s.render()
    assert 'destination_workload="reviews-v1"' not in text and 'destination_workload="reviews-v2"' in text
    assert s.live_proxies() == 1


def test_a_series_two_proxies_feed_stays_while_one_lives() -> None:
    s = MetricStore(grace=5)
    s.ingest(batch("a", 1, 3), 100.0)
    s.ingest(batch("b", 1, 2), 103.0)
    s.expire(106.0)
    [(_, _, v)] = parse(s.render())["istio_requests_total"].samples
    assert v == 5  # monotonic: a's past counts are not taken back while b still reports the series


def test_gaps_and_bad_samples_are_counted_not_fatal() -> None:
    s = MetricStore()
    s.ingest(batch("a", 1, 1), 1.0)
    s.ingest(batch("a", 4, 1), 2.0)
    assert s.missed == 2
    bad = MetricBatch(
        Source("a"),
        5,
        [
            FamilyDelta(
                "istio_requests_total",
                "counter",
                "h",
                NAMES,
                [],
                [[["x"], 1], [labels("source", "a", "b"), -1]],
            )
        ],
    )
    s.ingest(bad, 3.0)
    assert s.rejected == 2


def test_top_and_graph_from_the_edge_window() -> None:
    s = MetricStore()
    s.ingest(batch("a", 1, 8), 100.0)
    s.ingest(batch("a", 2, 2, code="503"), 100.5)
    from meshbus.bus.schemas.telemetry import StatsReply

    reply = StatsReply("r1", 10.0, list(ISTIO_DEFAULT_BUCKETS), s.window.edges(10.0, 101.0), 1)
    m = merge([reply, StatsReply("r2", 10.0, [], [], 0)], 10.0)
    top = top_rows(m)
    [svc] = top["services"]
    assert svc["name"] == "reviews.default.svc.cluster.local" and svc["rps"] == 1.0
    assert svc["success_rate"] == 0.8 and svc["mtls_share"] == 1.0 and 1 <= svc["p99_ms"] <= 5
    graph = kiali_graph(m)
    [edge] = graph["elements"]["edges"]
    assert (
        edge["data"]["source"] == "default/productpage-v1" and edge["data"]["target"] == "default/reviews-v1"
    )
    assert edge["data"]["traffic"]["rates"] == {"http": "1.000", "httpPercentErr": "20.0"}
    assert edge["data"]["isMTLS"] == "100"
    assert {n["data"]["workload"] for n in graph["elements"]["nodes"]} == {"productpage-v1", "reviews-v1"}
    assert graph["replicas"] == 2
    assert s.window.edges(10.0, 200.0) == []  # out of the window
