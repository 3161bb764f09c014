from __future__ import annotations

import msgpack
import pytest

from meshbus.telemetry.batch import SCHEMA, DeltaTracker, merge, snapshot
from meshbus.telemetry.errors import BatchError
from meshbus.telemetry.exposition import render_prometheus
from meshbus.telemetry.metrics import IstioMetrics, Registry, istio_static_labels

pytestmark = pytest.mark.unit


def _proxy(reporter: str) -> tuple[Registry, IstioMetrics]:
    r = Registry()
    return r, IstioMetrics(r)


def test_snapshot_is_msgpackable_and_merges_into_an_empty_registry() -> None:
    r, m = _proxy("source")
    m.series(istio_static_labels(reporter="source")).record(200, 3.0, 10, 20)
    r.gauge("g", "a gauge", ("node",)).labels("p1").set(7)
    batch = snapshot(r)
    wire = msgpack.unpackb(msgpack.packb(batch))
    assert wire["schema"] == SCHEMA
    collector = Registry()
    merge(collector, wire)
    assert render_prometheus(collector) == render_prometheus(r)


def test_merging_two_proxies_adds_counters_and_histograms_and_sets_gauges() -> None:
    static = istio_static_labels(reporter="source")
    r1, m1 = _proxy("source")
    r2, m2 = _proxy("source")
    m1.series(static).record(200, 3.0, 10, 20)
    m2.series(static).record(200, 30.0, 1, 2)
    m2.series(static).record(500, 1.0, 0, 0)
    r1.gauge("g", "h").set(1)
    r2.gauge("g", "h").set(5)
    collector = Registry()
    merge(collector, snapshot(r1))
    merge(collector, snapshot(r2))
    requests = collector.get("istio_requests_total")
    assert requests is not None
    assert requests.labels(*static, "200", "-").value == 2
    assert requests.labels(*static, "500", "-").value == 1
    dur = collector.get("istio_request_duration_milliseconds")
    assert dur is not None
    child = dur.labels(*static, "200", "-")
    assert child.count == 2 and child.sum == 33.0  # type: ignore[union-attr]
    gauge = collector.get("g")
    assert gauge is not None and gauge.labels().value == 5


def test_delta_tracker_ships_only_changes_and_sums_to_the_cumulative_value() -> None:
    static = istio_static_labels(reporter="destination")
    r, m = _proxy("destination")
    s = m.series(static)
    tracker = DeltaTracker(r)
    collector = Registry()
    s.record(200, 1.0, 0, 0)
    s.record(200, 2.0, 0, 0)
    first = tracker.delta()
    merge(collector, first)
    assert tracker.delta()["metrics"] == []  # nothing changed
    s.record(200, 500.0, 0, 0)
    s.record(404, 1.0, 0, 0)
    second = tracker.delta()
    req = next(x for x in second["metrics"] if x["name"] == "istio_requests_total")
    assert sorted((k[-2], v) for k, v in req["series"]) == [("200", 1), ("404", 1)]
    merge(collector, second)
    # families that never changed are not shipped, so compare the ones with series
    assert _with_series(snapshot(collector)) == _with_series(snapshot(r))


def _with_series(batch: dict) -> list:  # type: ignore[type-arg]
    return [m for m in batch["metrics"] if m["series"]]


def test_merge_rejects_mismatches_without_partial_updates() -> None:
    r = Registry()
    r.counter("x_total", "h", ("a",)).labels("1").inc()
    batch = snapshot(r)
    with pytest.raises(BatchError, match="schema"):
        merge(Registry(), {**batch, "schema": "other"})
    other = Registry()
    other.gauge("x_total", "h", ("a",))
    with pytest.raises(BatchError, match="registry has gauge"):
        merge(other, batch)
    hist = Registry()
    hist.histogram("h", "h", (), (1, 2))
    bad = {"schema": SCHEMA, "metrics": [{"name": "h", "type": "histogram", "help": "", "labels": [],
                                          "buckets": [1, 3], "series": []}]}  # fmt: skip
    with pytest.raises(BatchError, match="buckets"):
        merge(hist, bad)
    target = Registry()
    good_then_bad = {"schema": SCHEMA, "metrics": [
        {"name": "a_total", "type": "counter", "help": "", "labels": [], "series": [[[], 1]]},
        {"name": "b_total", "type": "counter", "help": "", "labels": ["k"], "series": [[[], 1]]},
    ]}  # fmt: skip
    with pytest.raises(BatchError, match="do not match"):
        merge(target, good_then_bad)
    a = target.get("a_total")
    assert a is not None and a.labels().value == 0
