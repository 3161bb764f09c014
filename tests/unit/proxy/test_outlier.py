"""Outlier detection: consecutive errors, ejection timing, maxEjectionPercent, restore, panic."""

from __future__ import annotations

import pytest

from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.core.outlier import OutlierSettings
from tests.unit.proxy.conftest import SERVICES, SeqRng, build

pytestmark = pytest.mark.unit


def cluster(n: int = 10, **kw: object) -> Cluster:
    settings = OutlierSettings(**kw)  # type: ignore[arg-type]
    eps = [Endpoint(f"10.0.0.{i}", 80) for i in range(n)]
    return Cluster("c", "s", 80, endpoints=eps, outlier=settings, lb_policy="ROUND_ROBIN")


def fail(c: Cluster, ep: Endpoint, times: int, now: float, status: int = 500) -> None:
    for _ in range(times):
        c.record_result(ep, status=status, error=None, now=now)


def test_ejected_after_consecutive_5xx() -> None:
    c = cluster(consecutive_5xx=3)
    ep = c.endpoints[0]
    fail(c, ep, 2, 0.0)
    assert not ep.ejected(0.0)
    fail(c, ep, 1, 0.0)
    assert ep.ejected(0.0) and ep.times_ejected == 1
    assert all(c.pick(None, 1.0) is not ep for _ in range(30))


def test_success_resets_the_count() -> None:
    c = cluster(consecutive_5xx=3)
    ep = c.endpoints[0]
    fail(c, ep, 2, 0.0)
    c.record_result(ep, status=200, error=None, now=0.0)
    fail(c, ep, 2, 0.0)
    assert not ep.ejected(0.0)


def test_connect_errors_count_as_5xx() -> None:
    c = cluster(consecutive_5xx=2)
    ep = c.endpoints[1]
    c.record_result(ep, status=None, error="connect-failure", now=0.0)
    c.record_result(ep, status=None, error="reset", now=0.0)
    assert ep.ejected(0.0)


def test_gateway_errors_only_502_503_504() -> None:
    c = cluster(consecutive_5xx=0, consecutive_gateway=2, max_ejection_percent=100)  # 5xx detection off
    a, b = c.endpoints[0], c.endpoints[1]
    fail(c, a, 5, 0.0, status=500)
    assert not a.ejected(0.0)
    fail(c, b, 1, 0.0, status=502)
    fail(c, b, 1, 0.0, status=500)  # a non-gateway 5xx breaks the run
    fail(c, b, 1, 0.0, status=504)
    assert not b.ejected(0.0)
    fail(c, b, 1, 0.0, status=503)
    assert b.ejected(0.0)
    c.record_result(c.endpoints[2], status=None, error="timeout", now=0.0)
    c.record_result(c.endpoints[2], status=None, error="timeout", now=0.0)
    assert c.endpoints[2].ejected(0.0)  # local timeouts are 504s


def test_ejection_time_grows_with_times_ejected_and_restores() -> None:
    c = cluster(consecutive_5xx=1, base_ejection_time=30.0, interval=10.0)
    ep = c.endpoints[0]
    fail(c, ep, 1, 100.0)
    assert ep.ejected_until == 130.0
    c.tick(129.0)
    assert ep.ejected(129.0)
    c.tick(130.0)
    assert not ep.ejected(130.0) and ep.ejected_until == 0.0
    fail(c, ep, 1, 200.0)
    assert ep.ejected_until == 260.0 and ep.times_ejected == 2  # base x 2
    c.tick(260.0)
    assert c.pick(None, 260.0) is not None


def test_ejection_time_is_capped_at_300s() -> None:
    c = cluster(consecutive_5xx=1, base_ejection_time=100.0)
    ep = c.endpoints[0]
    for k in range(5):
        now = 1000.0 * k
        fail(c, ep, 1, now)
        c.tick(now + 10000)
    assert ep.times_ejected == 5
    fail(c, ep, 1, 50000.0)
    assert ep.ejected_until == 50000.0 + 300.0


def test_max_ejection_percent_default_10_blocks_small_clusters() -> None:
    # Envoy: eject only while (ejected + 1) / hosts <= 10%; with 3 hosts nothing is ejected.
    c = cluster(n=3, consecutive_5xx=1)
    fail(c, c.endpoints[0], 1, 0.0)
    assert not c.endpoints[0].ejected(0.0)


def test_max_ejection_percent_limits_count() -> None:
    c = cluster(n=10, consecutive_5xx=1, max_ejection_percent=20)
    for ep in c.endpoints[:5]:
        fail(c, ep, 1, 0.0)
    assert sum(e.ejected(0.0) for e in c.endpoints) == 2


def test_max_ejection_percent_100_can_eject_all() -> None:
    c = cluster(n=2, consecutive_5xx=1, max_ejection_percent=100)
    for ep in c.endpoints:
        fail(c, ep, 1, 0.0)
    assert c.pick(None, 1.0) is None  # 503 UH


def test_counter_resets_after_blocked_ejection() -> None:
    c = cluster(n=2, consecutive_5xx=2, max_ejection_percent=50)
    a, b = c.endpoints
    fail(c, a, 2, 0.0)
    assert a.ejected(0.0)
    fail(c, b, 2, 0.0)  # blocked: would be 100%
    assert not b.ejected(0.0)
    c.tick(31.0)
    fail(c, b, 1, 31.0)  # the blocked attempt reset b's count, so one more error is not enough
    assert not b.ejected(31.0)
    fail(c, b, 1, 31.0)
    assert b.ejected(31.0)


def test_min_health_percent_panics_to_all_hosts() -> None:
    c = cluster(n=2, consecutive_5xx=1, max_ejection_percent=100, min_health_percent=60)
    c.rng = SeqRng([0.1])
    fail(c, c.endpoints[0], 1, 0.0)
    # 1 of 2 healthy = 50% < 60%: panic, every host is a candidate again
    picks = {c.pick(None, 1.0).address for _ in range(4)}
    assert picks == {"10.0.0.0", "10.0.0.1"}


def test_no_outlier_detection_without_settings() -> None:
    eps = [Endpoint("10.0.0.1", 80)]
    c = Cluster("c", "s", 80, endpoints=eps)
    fail(c, eps[0], 100, 0.0)
    assert not eps[0].ejected(0.0)


def test_outlier_detection_from_destination_rule() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
"""
    )
    rt = build(text)
    c = rt.clusters["outbound|9080||ratings.default.svc.cluster.local"]
    assert c.outlier is not None
    assert (c.outlier.consecutive_5xx, c.outlier.interval, c.outlier.base_ejection_time) == (1, 1.0, 180.0)
    assert c.outlier_interval == 1.0
    ep = c.pick(None, 0.0)
    c.record_result(ep, status=503, error=None, now=0.0)
    assert c.pick(None, 1.0) is None
    c.tick(180.0)
    assert c.pick(None, 180.0) is ep


def test_outlier_defaults() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {consecutiveGatewayErrors: 2}
"""
    )
    od = build(text).clusters["outbound|9080||ratings.default.svc.cluster.local"].outlier
    assert od == OutlierSettings(
        consecutive_5xx=5, consecutive_gateway=2, interval=10.0, base_ejection_time=30.0
    )
