"""Metric deltas a proxy ships: only what changed, and nothing lost when a batch was not sent."""

from __future__ import annotations

import pytest

from meshbus.telemetry.delta import DeltaTracker
from meshbus.telemetry.metrics import IstioMetrics, Registry, istio_static_labels

pytestmark = pytest.mark.unit


def _by_name(families: list) -> dict:  # type: ignore[type-arg]
    return {f.name: f for f in families}


def test_deltas_since_the_last_commit() -> None:
    r = Registry()
    m = IstioMetrics(r)
    gauge = r.gauge("g", "a gauge")
    gauge.set(5)
    s = m.series(istio_static_labels(reporter="source"))
    t = DeltaTracker(r)
    s.record(200, 3.0, 0, 10)
    s.record(200, 7.0, 0, 10)
    fams, base = t.collect()
    got = _by_name(fams)
    assert "g" not in got  # gauges do not add up: not shipped
    [count] = got["istio_requests_total"].samples
    assert count[1] == 2 and count[0][-2:] == ["200", "-"]
    [dur] = got["istio_request_duration_milliseconds"].samples
    assert sum(dur[1]) == 2 and dur[2] == 10.0 and len(dur[1]) == 20
    t.commit(base)
    assert t.collect()[0] == []  # nothing new
    s.record(200, 1.0, 0, 10)
    fams, _uncommitted = t.collect()
    assert _by_name(fams)["istio_requests_total"].samples[0][1] == 1
    s.record(503, 1.0, 0, 0, "UH")
    fams, base = t.collect()  # the last batch was not sent: its change comes again, with the new one
    samples = {tuple(v[0][-2:]): v[1] for v in _by_name(fams)["istio_requests_total"].samples}
    assert samples == {("200", "-"): 1, ("503", "UH"): 1}
