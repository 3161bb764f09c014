from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.telemetry.exposition import (
    CONTENT_TYPE,
    format_value,
    histogram_quantile,
    render_prometheus,
    render_stats_json,
    render_stats_text,
)
from meshbus.telemetry.metrics import (
    ISTIO_DEFAULT_BUCKETS,
    HistogramChild,
    InternalMetrics,
    IstioMetrics,
    Registry,
    istio_static_labels,
)

from .promtext import check_histogram, parse

pytestmark = pytest.mark.unit


def _mesh_registry() -> tuple[Registry, IstioMetrics]:
    r = Registry()
    m = IstioMetrics(r)
    internal = InternalMetrics(r)
    a = m.series(
        istio_static_labels(reporter="source", destination_service="reviews.default.svc.cluster.local")
    )
    b = m.series(istio_static_labels(reporter="destination", destination_app="ratings"))
    for i in range(50):
        a.record(200, i * 7.5, i, i * 100)
    a.record(503, 0.1, 0, 19, "UH")
    b.record(404, 1e7, 0, 0)
    internal.local_replies.labels("UH").inc()
    internal.telemetry_dropped.labels("access_log").inc(3)
    return r, m


def test_content_type_is_0_0_4() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_empty_registry_renders_empty_text() -> None:
    assert render_prometheus(Registry()) == ""


def test_declared_metric_without_series_has_help_and_type_only() -> None:
    r = Registry()
    r.counter("x_total", "An x", ("a",))
    assert render_prometheus(r) == "# HELP x_total An x\n# TYPE x_total counter\n"


def test_istio_exposition_parses_back_with_histogram_invariants() -> None:
    r, _ = _mesh_registry()
    text = render_prometheus(r)
    families = parse(text)
    assert families["istio_requests_total"].type == "counter"
    requests = families["istio_requests_total"].samples
    by_code = {labels["response_code"]: v for _, labels, v in requests if labels["reporter"] == "source"}
    assert by_code == {"200": 50, "503": 1}
    for name in ("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"):
        assert families[name].type == "histogram"
        series = check_histogram(families[name])
        assert len(series) == 3
        for entry in series.values():
            les = [le for le, _ in entry["buckets"]]  # type: ignore[union-attr]
            assert les == [*ISTIO_DEFAULT_BUCKETS, math.inf]
    durations = check_histogram(families["istio_request_duration_milliseconds"])
    ok = next(e for k, e in durations.items() if ("response_code", "200") in k)
    assert ok["count"] == 50
    assert ok["sum"] == sum(i * 7.5 for i in range(50))
    assert dict(ok["buckets"])[100.0] == sum(1 for i in range(50) if i * 7.5 <= 100)  # type: ignore[arg-type]
    huge = next(e for k, e in durations.items() if ("response_code", "404") in k)
    assert dict(huge["buckets"])[3600000.0] == 0 and dict(huge["buckets"])[math.inf] == 1  # type: ignore[arg-type]
    assert families["meshbus_telemetry_dropped_total"].samples == [
        ("meshbus_telemetry_dropped_total", {"signal": "access_log"}, 3)
    ]


def test_le_values_are_rendered_like_envoy_without_trailing_zero() -> None:
    r = Registry()
    r.histogram("h", "h").observe(1)
    text = render_prometheus(r)
    assert 'h_bucket{le="0.5"} 0\n' in text
    assert 'h_bucket{le="1"} 1\n' in text
    assert 'h_bucket{le="3600000"} 1\n' in text
    assert 'h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n' in text


def test_label_and_help_escaping() -> None:
    r = Registry()
    c = r.counter("esc_total", 'back\\slash and\nnewline "quoted"', ("v",))
    c.labels('a"b\\c\nd').inc()
    text = render_prometheus(r)
    assert '# HELP esc_total back\\\\slash and\\nnewline "quoted"\n' in text
    assert 'esc_total{v="a\\"b\\\\c\\nd"} 1\n' in text
    fam = parse(text)["esc_total"]
    assert fam.help == 'back\\slash and\nnewline "quoted"'
    assert fam.samples[0][1] == {"v": 'a"b\\c\nd'}


@given(st.lists(st.text(max_size=20), min_size=1, max_size=10, unique=True))
def test_any_label_value_round_trips(values: list[str]) -> None:
    r = Registry()
    c = r.counter("rt_total", "h", ("v",))
    for v in values:
        c.labels(v).inc()
    got = [labels["v"] for _, labels, _ in parse(render_prometheus(r))["rt_total"].samples]
    assert got == values


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (2.0, "2"),
        (0.25, "0.25"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (1e20, "1e+20"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_histogram_quantile_interpolates_like_promql() -> None:
    h = HistogramChild((10.0, 20.0, 40.0))
    assert math.isnan(histogram_quantile(0.5, h))
    for v in (5, 15, 15, 30):
        h.observe(v)
    assert histogram_quantile(0.25, h) == pytest.approx(10.0)  # rank 1 -> top of the first bucket
    assert histogram_quantile(0.5, h) == pytest.approx(15.0)  # rank 2 -> half way through (10, 20]
    assert histogram_quantile(1.0, h) == pytest.approx(40.0)
    h.observe(1000)
    assert histogram_quantile(1.0, h) == 40.0  # the +Inf bucket reports the highest finite bound


def test_stats_text_and_json() -> None:
    r = Registry()
    r.counter("a_total", "h", ("k",)).labels("v").inc(2)
    r.histogram("lat", "h", (), (10, 100)).observe(50)
    text = render_stats_text(r)
    assert 'a_total{k="v"}: 2\n' in text
    assert text.splitlines()[1].startswith("lat: P0(10) P25(")
    js = render_stats_json(r)
    assert js["stats"][0] == {"name": 'a_total{k="v"}', "value": 2}
    hist = js["stats"][-1]["histograms"]
    assert hist["supported_quantiles"][2] == 50
    assert hist["computed_quantiles"][0]["name"] == "lat"
    assert hist["computed_quantiles"][0]["values"][2]["cumulative"] == pytest.approx(55.0)


@pytest.mark.parametrize(
    "bad",
    [
        "# TYPE a counter\na 1",  # no trailing newline
        "# HELP a x\n# HELP a y\na 1\n",  # HELP twice
        "a 1\n# TYPE a counter\n",  # TYPE after samples
        'a 1\nb 1\na{x="1"} 2\n',  # interrupted group
        "a 1\na 2\n",  # duplicate series
        'a{x="\\t"} 1\n',  # invalid escape
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',  # not cumulative
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',  # no +Inf
        '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n',  # +Inf != count
    ],
)
def test_the_test_reader_rejects_broken_expositions(bad: str) -> None:
    with pytest.raises(AssertionError):
        for fam in parse(bad).values():
            if fam.type == "histogram":
                check_histogram(fam)
