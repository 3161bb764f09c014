from __future__ import annotations

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.telemetry import fields
from meshbus.telemetry.errors import LabelError, MetricDefinitionError, TelemetryError
from meshbus.telemetry.exposition import render_prometheus
from meshbus.telemetry.metrics import (
    ISTIO_DEFAULT_BUCKETS,
    HistogramChild,
    InternalMetrics,
    IstioMetrics,
    Registry,
    RequestSeries,
    bucket,
    istio_static_labels,
)

pytestmark = pytest.mark.unit


def test_istio_default_buckets_are_the_documented_ones() -> None:
    assert ISTIO_DEFAULT_BUCKETS == (
        0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
        30000, 60000, 300000, 600000, 1800000, 3600000,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "index"),
    [(0, 0), (0.5, 0), (0.50001, 1), (1, 1), (4.9, 2), (5, 2), (3600000, 18), (3600000.1, 19), (1e12, 19)],
)
def test_observation_lands_in_smallest_bucket_with_value_le_bound(value: float, index: int) -> None:
    h = HistogramChild(tuple(float(b) for b in ISTIO_DEFAULT_BUCKETS))
    h.observe(value)
    assert h.counts.index(1) == index
    assert h.count == 1
    assert h.sum == value


@given(st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), max_size=50))
def test_cumulative_counts_match_a_direct_count(values: list[float]) -> None:
    bounds = tuple(float(b) for b in ISTIO_DEFAULT_BUCKETS)
    h = HistogramChild(bounds)
    for v in values:
        h.observe(v)
    cumulative = h.cumulative()
    assert cumulative == [sum(1 for v in values if v <= b) for b in bounds] + [len(values)]
    assert h.sum == pytest.approx(sum(values))


def test_counter_gauge_basics() -> None:
    r = Registry()
    c = r.counter("c_total", "help", ("a",))
    c.labels("x").inc()
    c.labels("x").inc(2.5)
    assert c.labels("x").value == 3.5
    with pytest.raises(LabelError):
        c.labels("x").inc(-1)
    g = r.gauge("g", "help")
    g.set(5)
    g.inc()
    g.dec(3)
    assert g.labels().value == 3
    u = r.counter("u_total", "help")
    u.inc()
    assert [v for _, v in ((k, ch.value) for k, ch in u.series())] == [1]


def test_counts_stay_ints_in_both_builds() -> None:
    # compiled, a float-typed amount turned every count into a float (2 -> 2.0): /stats' JSON and the
    # shipped deltas then differed between the compiled and the pure build
    r = Registry()
    c = r.counter("n_total", "help", ("a",))
    c.labels("x").inc()
    c.labels("x").inc()
    g = r.gauge("g", "help")
    g.set(5)
    g.inc()
    g.dec(2)
    assert (c.labels("x").value, g.labels().value) == (2, 4)
    assert type(c.labels("x").value) is int and type(g.labels().value) is int
    c.labels("x").inc(0.5)
    assert c.labels("x").value == 2.5


def test_labels_are_checked_when_a_series_is_created() -> None:
    r = Registry()
    c = r.counter("c_total", "help", ("a", "b"))
    with pytest.raises(LabelError, match="expected 2 label values"):
        c.labels("x")
    with pytest.raises(LabelError, match="must be str"):
        c.labels("x", 200)  # type: ignore[arg-type]
    with pytest.raises(LabelError, match=r"use \.labels"):
        c.inc()
    assert len(c) == 0


@pytest.mark.parametrize(
    ("name", "labels", "match"),
    [
        ("0bad", (), "invalid metric name"),
        ("ok", ("bad-label",), "invalid label name"),
        ("ok", ("__reserved",), "invalid label name"),
        ("ok", ("a", "a"), "duplicate label"),
        ("ok", "ab", "not a str"),
    ],
)
def test_bad_definitions_are_rejected(name: str, labels: tuple[str, ...], match: str) -> None:
    with pytest.raises(MetricDefinitionError, match=match) as exc:
        Registry().counter(name, "h", labels)
    assert str(exc.value).startswith("meshbus: ")
    assert isinstance(exc.value, TelemetryError)


def test_duplicate_and_histogram_specific_definitions_are_rejected() -> None:
    r = Registry()
    r.counter("x_total", "h")
    with pytest.raises(MetricDefinitionError, match="already declared"):
        r.gauge("x_total", "h")
    with pytest.raises(MetricDefinitionError, match="'le'"):
        r.histogram("h1", "h", ("le",))
    with pytest.raises(MetricDefinitionError, match="strictly increasing"):
        r.histogram("h2", "h", (), (1, 1, 2))
    with pytest.raises(MetricDefinitionError, match="finite"):
        r.histogram("h3", "h", (), (1, float("inf")))
    with pytest.raises(MetricDefinitionError, match="finite"):
        r.histogram("h4", "h", (), ())


def test_istio_static_labels_fills_unknown_in_canonical_order() -> None:
    labels = istio_static_labels(reporter="source", destination_service="reviews.default.svc.cluster.local")
    assert len(labels) == len(fields.ISTIO_STATIC_LABELS)
    named = dict(zip(fields.ISTIO_STATIC_LABELS, labels, strict=True))
    assert named["reporter"] == "source"
    assert named["destination_service"] == "reviews.default.svc.cluster.local"
    assert named["source_workload"] == "unknown"
    with pytest.raises(LabelError, match="response_code"):
        istio_static_labels(response_code="200")


def test_istio_metric_names_and_labels() -> None:
    r = Registry()
    IstioMetrics(r)
    InternalMetrics(r)
    names = {f.name: f for f in r.families()}
    assert set(names) == {
        "istio_requests_total",
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
        "meshbus_proxy_local_replies_total",
        "meshbus_telemetry_dropped_total",
    }
    assert names["istio_requests_total"].label_names[-2:] == ("response_code", "response_flags")
    assert names["istio_request_duration_milliseconds"].kind == "histogram"
    assert "grpc_response_status" in names["istio_requests_total"].label_names


def test_series_updates_all_four_request_metrics() -> None:
    r = Registry()
    m = IstioMetrics(r)
    static = istio_static_labels(reporter="destination", destination_app="reviews")
    series = m.series(static)
    assert m.series(static) is series
    series.record(200, 12.0, 100, 2000)
    series.record(200, 3.0, 0, 10)
    m.series(static).record(503, 0.2, 0, 19, "UH")
    key200 = (*static, "200", "-")
    key503 = (*static, "503", "UH")
    assert m.requests_total.labels(*key200).value == 2
    assert m.requests_total.labels(*key503).value == 1
    dur = m.request_duration.labels(*key200)
    assert dur.count == 2 and dur.sum == 15.0
    assert dur.cumulative()[ISTIO_DEFAULT_BUCKETS.index(5)] == 1  # 3.0 <= 5 but 12.0 is not
    assert m.request_bytes.labels(*key200).sum == 100
    assert m.response_bytes.labels(*key503).sum == 19
    assert len(m.requests_total) == 2


def test_request_series_rejects_a_wrong_static_tuple() -> None:
    m = IstioMetrics(Registry())
    with pytest.raises(LabelError, match="static label tuple"):
        m.series(("source",))


def test_a_variant_family_renders_under_one_help_and_type() -> None:
    r = Registry()
    base = r.counter("x_total", "An x", ("a",))
    wider = r.variant(base, ("a", "b"))
    assert r.variant(base, ("a", "b")) is wider and r.variant(base, ("a",)) is base
    base.labels("1").inc()
    wider.labels("1", "2").inc(2)
    text = render_prometheus(r)
    assert text.count("# TYPE x_total counter") == 1
    assert 'x_total{a="1"} 1' in text and 'x_total{a="1",b="2"} 2' in text
    with pytest.raises(MetricDefinitionError, match="invalid label"):
        r.variant(base, ("a", "__b"))


def test_a_disabled_metric_records_nowhere() -> None:
    r = Registry()
    m = IstioMetrics(r)
    static = istio_static_labels(reporter="source")
    series = RequestSeries((None, (m.request_duration, static), None, None), m.buckets)
    series.record(200, 5.0, 0, 10)
    assert len(m.requests_total) == 0 and len(m.request_bytes) == 0
    assert m.request_duration.labels(*static, "200", "-").count == 1


def test_bucket_is_bisect_left() -> None:
    floats = tuple(float(b) for b in ISTIO_DEFAULT_BUCKETS)
    values = [-1.0, 0.0, 0.2, 0.5, 0.50001, 1.0, 7.0, 100.0, 3_600_000.0, 1e12, float("inf"), float("nan")]
    values += list(floats) + [b - 1e-9 for b in floats] + [b + 1e-9 for b in floats]
    for v in values:
        assert bucket(floats, v) == bisect.bisect_left(floats, v), v
    assert bucket((), 1.0) == 0


def test_a_tally_is_read_with_its_counter_series_and_counted_once() -> None:
    from meshbus.telemetry.delta import DeltaTracker

    reg = Registry()
    calls = reg.counter("calls_total", "Calls", ("hook",))
    tally = calls.tally("on_request_headers")
    assert calls.tally("on_request_headers") is tally  # one per series
    assert len(calls) == 1  # the series exists from the tally's making, at 0
    tracker = DeltaTracker(reg)
    tally.n += 3
    assert render_prometheus(reg).splitlines()[-1] == 'calls_total{hook="on_request_headers"} 3'
    deltas, baseline = tracker.collect()
    tracker.commit(baseline)
    assert [d.samples for d in deltas] == [[[["on_request_headers"], 3]]]
    tally.n += 2  # after a read: added to what was read, not counted twice
    calls.labels("on_request_headers").inc()  # the series' own increments add up with it
    deltas, _ = tracker.collect()
    assert [d.samples for d in deltas] == [[[["on_request_headers"], 3]]]
    assert [(v, c.value) for v, c in calls.series()] == [(("on_request_headers",), 6)]
    assert type(calls.labels("on_request_headers").value) is int
