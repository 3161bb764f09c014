"""DestinationRule ``connectionPool.http.maxRetries``: the cluster's budget of concurrent retries, enforced
as Envoy does (a retry over it is not made; the failure goes to the client) and counted in /clusters."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ROUTE = yaml("""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews}
    spec:
      hosts: [reviews]
      http:
      - route: [{destination: {host: reviews}}]
        retries: {attempts: 3, retryOn: 5xx}
    """)


async def test_max_retries_limits_concurrent_retries_and_counts_the_overflow(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams(fail_first=100)  # every request: 503
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolicy:
            connectionPool:
              http: {maxRetries: 1}
        """)
    p = await proxy(service_entry("reviews", [u]) + dr + "---\n" + ROUTE)
    # Four requests fail together (each answer takes 0.3 s). The first failure handled takes the one
    # retry slot and keeps it while its retries run (0.3 s each); the three others find the budget
    # full: their 503 goes to the client at once, with no retry.
    results = await asyncio.gather(*[fetch(p.port, "/", headers=[("x-test-delay", "0.3")]) for _ in range(4)])
    assert [r.status for r in results] == [503] * 4
    assert len(u.seen) == 4 + 3  # without the budget: 4 x (1 + 3)
    name = "outbound|9080||reviews.default.svc.cluster.local"
    text = (await fetch(p.admin_port, "/clusters", host="admin")).body.decode()
    for line in (
        "default_priority::max_retries::1",
        "upstream_rq_retry::3",
        "upstream_rq_retry_overflow::3",
        "upstream_rq_retry_limit_exceeded::1",
        "active_retries::0",
    ):
        assert f"{name}::{line}\n" in text, line
    stats = next(
        c
        for c in (await fetch(p.admin_port, "/clusters?format=json", host="admin")).json()["clusters"]
        if c["name"] == name
    )["stats"]
    assert (stats["upstream_rq_retry"], stats["upstream_rq_retry_overflow"]) == (3, 3)


async def test_without_max_retries_every_request_retries(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams(fail_first=100)
    p = await proxy(service_entry("reviews", [u]) + ROUTE)
    results = await asyncio.gather(*[fetch(p.port, "/", headers=[("x-test-delay", "0.1")]) for _ in range(4)])
    assert [r.status for r in results] == [503] * 4
    assert len(u.seen) == 4 * (1 + 3)
    text = (await fetch(p.admin_port, "/clusters", host="admin")).body.decode()
    assert "upstream_rq_retry::12\n" in text and "upstream_rq_retry_overflow::0\n" in text
