"""Istio traffic management through the proxy, end to end: real upstream servers, real sockets."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Client, fetch
from tests.support.bounded import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
"""


async def test_header_based_routing(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{headers: {end-user: {exact: jason}}}]
            route: [{destination: {host: reviews, subset: v2}}]
          - route: [{destination: {host: reviews, subset: v1}}]
        """)
    p = await proxy(service_entry("reviews", [v1, v2]) + SUBSETS + vs)
    c = await Client.connect(p.port)
    try:
        for _ in range(5):
            r = await c.request(path="/reviews/1", headers=[("end-user", "jason")])
            assert r.json()["version"] == "v2"
            r = await c.request(path="/reviews/1", host="reviews.default.svc.cluster.local:9080")
            assert r.json()["version"] == "v1"
    finally:
        await c.close()


async def test_weighted_canary_90_10(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route:
            - {destination: {host: reviews, subset: v1}, weight: 90}
            - {destination: {host: reviews, subset: v2}, weight: 10}
        """)
    p = await proxy(service_entry("reviews", [v1, v2]) + SUBSETS + vs)
    c = await Client.connect(p.port)
    try:
        for _ in range(400):
            assert (await c.request()).status == 200
    finally:
        await c.close()
    # binomial(400, 0.1): mean 40, sd 6; these bounds fail by chance far less than once in a million
    assert 10 <= len(v2.seen) <= 80, (len(v1.seen), len(v2.seen))
    assert len(v1.seen) + len(v2.seen) == 400


async def test_fault_delay_and_abort(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /slow}}]
            fault: {delay: {fixedDelay: 0.3s, percentage: {value: 100}}}
            route: [{destination: {host: reviews}}]
          - match: [{uri: {prefix: /broken}}]
            fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
            route: [{destination: {host: reviews}}]
          - route: [{destination: {host: reviews}}]
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    t0 = time.monotonic()
    r = await fetch(p.port, "/slow")
    assert r.status == 200 and time.monotonic() - t0 >= 0.29
    r = await fetch(p.port, "/broken")
    assert r.status == 418 and r.flags == "FI"
    assert [s.path for s in u.seen] == ["/slow"]  # the abort never reached the upstream
    t0 = time.monotonic()
    assert (await fetch(p.port, "/fast")).status == 200
    assert time.monotonic() - t0 < 0.25


async def test_retries_until_the_upstream_recovers(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams(fail_first=2)
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries: {attempts: 3, retryOn: 5xx}
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    r = await fetch(p.port, "/r", method="POST", body=b"payload")
    assert r.status == 200
    assert len(u.seen) == 3 and all(s.body == b"payload" for s in u.seen)
    # more failures than attempts: the client gets the upstream's last answer
    u.fail_first = 10
    r = await fetch(p.port, "/r")
    assert r.status == 503
    assert len(u.seen) == 3 + 4


async def test_route_timeout_gives_504(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            timeout: 0.3s
            retries: {attempts: 0}
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    t0 = time.monotonic()
    r = await fetch(p.port, "/", headers=[("x-test-delay", "3")])
    assert r.status == 504 and r.flags == "UT"
    assert time.monotonic() - t0 < 1.5
    assert (await fetch(p.port, "/")).status == 200  # the pool is still usable


async def test_per_try_timeout_retries_on_another_try(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    slow, fast = await upstreams("v1"), await upstreams("v2")
    slow.mode = "hang"
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries: {attempts: 4, perTryTimeout: 0.2s, retryOn: "5xx,gateway-error"}
        """)
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
        """)
    p = await proxy(service_entry("reviews", [slow, fast]) + dr + "---\n" + vs)
    for _ in range(3):
        r = await fetch(p.port, "/")
        assert r.status == 200 and r.json()["version"] == "v2"


async def test_circuit_breaker_answers_503_uo(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolicy:
            connectionPool:
              tcp: {maxConnections: 1}
              http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 10}
        """)
    p = await proxy(service_entry("reviews", [u]) + dr)
    results = await asyncio.gather(*[fetch(p.port, "/", headers=[("x-test-delay", "0.3")]) for _ in range(6)])
    codes = sorted(r.status for r in results)
    assert codes.count(200) >= 2, codes  # one on the connection, one queued
    overflow = [r for r in results if r.status == 503]
    assert overflow and all(r.flags == "UO" for r in overflow)
    assert u.connections == 1


async def test_outlier_detection_ejects_and_restores(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    good, bad = await upstreams("v1"), await upstreams("v2", fail_first=1000)
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolicy:
            loadBalancer: {simple: ROUND_ROBIN}
            outlierDetection: {consecutive5xxErrors: 2, interval: 0.1s, baseEjectionTime: 0.6s,
                               maxEjectionPercent: 100}
        """)
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            retries: {attempts: 0}
        """)
    p = await proxy(service_entry("reviews", [good, bad]) + dr + "---\n" + vs)
    c = await Client.connect(p.port)
    try:
        codes = [(await c.request()).status for _ in range(8)]
        assert codes.count(503) == 2, codes  # two failures eject the bad endpoint

        async def healthy() -> dict[int, bool]:
            admin = await fetch(p.admin_port, "/clusters?format=json", host="admin")
            return {e["port"]: e["healthy"] for cl in admin.json()["clusters"] for e in cl["endpoints"]}

        assert await healthy() == {bad.port: False, good.port: True}
        bad.fail_first = 0
        seen_before = len(bad.seen)

        async def restored() -> bool:
            return (await healthy())[bad.port]

        # the base ejection time passes and the sweep restores the endpoint
        await eventually("the ejected endpoint to return", restored)
        codes = [(await c.request()).status for _ in range(6)]
        assert codes == [200] * 6 and len(bad.seen) > seen_before
    finally:
        await c.close()


async def test_local_rate_limit_429(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    rl = yaml("""
        apiVersion: meshbus.io/v1
        kind: LocalRateLimit
        metadata: {name: reviews-rl}
        spec:
          hosts: [reviews]
          tokenBucket: {maxTokens: 3, tokensPerFill: 1, fillInterval: 60s}
        """)
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
        """)
    p = await proxy(service_entry("reviews", [u]) + vs + "---\n" + rl)
    c = await Client.connect(p.port)
    try:
        codes = [(await c.request()) for _ in range(5)]
    finally:
        await c.close()
    assert [r.status for r in codes] == [200, 200, 200, 429, 429]
    assert codes[-1].flags == "RL" and len(u.seen) == 3


async def test_redirect_rewrite_and_header_ops(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {exact: /old}}]
            redirect: {uri: /new, authority: ratings}
          - match: [{uri: {prefix: /api/}}]
            rewrite: {uri: /v1/, authority: backend.example}
            headers:
              request: {set: {x-added: one}, remove: [x-secret]}
              response: {add: {x-resp: two}}
            route: [{destination: {host: reviews}}]
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    r = await fetch(p.port, "/old?q=1")
    assert r.status == 301 and r.headers["location"] == "http://ratings/new?q=1"
    r = await fetch(p.port, "/api/items?id=2", headers=[("x-secret", "s")])
    assert r.status == 200 and r.headers["x-resp"] == "two"
    seen = u.seen[-1]
    assert seen.path == "/v1/items?id=2"
    assert seen.headers["host"] == "backend.example"
    assert seen.headers["x-added"] == "one" and "x-secret" not in seen.headers


async def test_mirror_is_fire_and_forget(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    main, shadow = await upstreams("v1"), await upstreams("shadow")
    shadow.mode = "hang"  # a shadow that never answers must not slow the main request
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            mirror: {host: ratings}
            mirrorPercentage: {value: 100}
        """)
    p = await proxy(service_entry("reviews", [main]) + service_entry("ratings", [shadow]) + vs)
    t0 = time.monotonic()
    r = await fetch(p.port, "/m", method="POST", body=b"copy me")
    assert r.status == 200 and time.monotonic() - t0 < 0.5
    await shadow.wait_for_requests(1)
    assert shadow.seen[0].headers["host"] == "reviews-shadow"
    assert shadow.seen[0].body == b"copy me" and shadow.seen[0].path == "/m"


async def test_cors_preflight_and_response_headers(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    vs = yaml("""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - route: [{destination: {host: reviews}}]
            corsPolicy:
              allowOrigins: [{exact: "https://app.example"}]
              allowMethods: [GET, POST]
              allowHeaders: [x-custom]
              maxAge: 24h
        """)
    p = await proxy(service_entry("reviews", [u]) + vs)
    pre = await fetch(
        p.port,
        "/",
        method="OPTIONS",
        headers=[("origin", "https://app.example"), ("access-control-request-method", "POST")],
    )
    assert pre.status == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert not u.seen  # the preflight is answered by the proxy
    r = await fetch(p.port, "/", headers=[("origin", "https://app.example")])
    assert r.status == 200 and r.headers["access-control-allow-origin"] == "https://app.example"


async def test_metrics_and_access_log(upstreams: UpstreamFactory, proxy: ProxyFactory, tmp_path) -> None:
    u = await upstreams()
    log_path = tmp_path / "access.log"
    p = await proxy(service_entry("reviews", [u]), access_log=str(log_path))
    assert (await fetch(p.port, "/ok")).status == 200
    assert (await fetch(p.port, "/x", host="unknown-service")).status == 404
    prom = (await fetch(p.admin_port, "/stats/prometheus", host="admin")).body.decode()
    assert 'istio_requests_total{reporter="source"' in prom
    assert 'destination_service="reviews.default.svc.cluster.local"' in prom
    assert 'response_code="404"' in prom and 'response_flags="NR"' in prom
    assert "istio_request_duration_milliseconds_bucket" in prom
    await p.server.shutdown(0)  # flushes the access log
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(x["path"], x["response_code"], x["response_flags"]) for x in lines] == [
        ("/ok", 200, "-"),
        ("/x", 404, "NR"),
    ]
    assert lines[0]["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert lines[0]["upstream_host"] == f"127.0.0.1:{u.port}" and lines[1]["upstream_host"] is None
    assert lines[0]["request_id"] and lines[0]["route_name"]


async def test_consistent_hash_keeps_a_user_on_one_endpoint(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    a, b, c = await upstreams("a"), await upstreams("b"), await upstreams("c")
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
        """)
    p = await proxy(service_entry("reviews", [a, b, c]) + dr)
    conn = await Client.connect(p.port)
    try:
        for user in ("alice", "bob", "carol", "dave"):
            versions = {(await conn.request(headers=[("x-user", user)])).json()["version"] for _ in range(8)}
            assert len(versions) == 1, (user, versions)
    finally:
        await conn.close()


async def test_max_requests_per_connection_recycles_upstream_connections(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    u = await upstreams()
    dr = yaml("""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 2}}}
        """)
    p = await proxy(service_entry("reviews", [u]) + dr)
    c = await Client.connect(p.port)
    try:
        for _ in range(6):
            assert (await c.request()).status == 200
    finally:
        await c.close()
    assert u.connections == 3
