from __future__ import annotations

import pytest

from meshbus.proxy.core.breaker import UNLIMITED, CircuitBreaker
from tests.unit.proxy.conftest import SERVICES, build

pytestmark = pytest.mark.unit


def test_defaults_are_unlimited() -> None:
    b = CircuitBreaker()
    assert b.max_connections == b.max_pending == b.max_requests == b.max_retries == UNLIMITED == 2**32 - 1


def test_pending_limit_overflows() -> None:
    b = CircuitBreaker(max_pending=1)
    assert b.try_enqueue_pending()
    assert not b.try_enqueue_pending()
    assert b.pending_overflow == 1
    b.dequeue_pending()
    assert b.try_enqueue_pending()


def test_request_limit_and_release() -> None:
    b = CircuitBreaker(max_requests=2)
    assert b.try_start_request() and b.try_start_request()
    assert not b.try_start_request() and b.rq_overflow == 1
    b.end_request()
    assert b.try_start_request()
    for _ in range(5):
        b.end_request()
    assert b.active_requests == 0  # never negative


def test_retry_and_connection_limits() -> None:
    b = CircuitBreaker(max_retries=1, max_connections=1)
    assert b.try_start_retry() and not b.try_start_retry()
    b.end_retry()
    assert b.try_start_retry()
    assert b.try_open_connection() and not b.try_open_connection()
    b.connection_closed()
    assert b.try_open_connection()
    assert b.describe()["overflow"] == {"requests": 0, "pending": 0, "retries": 1, "connections": 1}


CB = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, idleTimeout: 30s, maxRetries: 3, http2MaxRequests: 7}
"""


def test_connection_pool_from_destination_rule() -> None:
    rt = build(SERVICES + CB)
    c = rt.clusters["outbound|9080||ratings.default.svc.cluster.local"]
    p = c.pool
    assert (p.max_connections, p.max_pending, p.max_requests_per_connection) == (1, 1, 1)
    assert (p.connect_timeout, p.idle_timeout, p.max_retries, p.max_requests) == (0.25, 30.0, 3, 7)
    b = c.breaker
    assert (b.max_connections, b.max_pending, b.max_retries, b.max_requests) == (1, 1, 3, 7)
    # Istio's circuit-breaking task: a second waiting request overflows (503 UO)
    assert b.try_enqueue_pending() and not b.try_enqueue_pending()


def test_pool_defaults() -> None:
    p = build(SERVICES).clusters["outbound|9080||ratings.default.svc.cluster.local"].pool
    assert (p.connect_timeout, p.idle_timeout, p.max_requests_per_connection) == (10.0, 3600.0, 0)
