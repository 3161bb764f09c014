from __future__ import annotations

import pytest

from meshbus.proxy.filters.ratelimit import LOCAL_RATELIMIT, TokenBucket
from tests.unit.proxy.conftest import SERVICES, build, req

pytestmark = pytest.mark.unit


def test_bucket_starts_full_then_limits() -> None:
    b = TokenBucket(max_tokens=3, tokens_per_fill=1, fill_interval=1.0)
    assert [b.try_acquire(100.0) for _ in range(4)] == [True, True, True, False]


def test_refill_per_interval_capped_at_max() -> None:
    b = TokenBucket(max_tokens=2, tokens_per_fill=1, fill_interval=1.0)
    assert b.try_acquire(0.0) and b.try_acquire(0.0) and not b.try_acquire(0.5)
    assert b.try_acquire(1.0)  # one token after one interval
    assert not b.try_acquire(1.9)
    assert b.try_acquire(10.0) and b.try_acquire(10.0) and not b.try_acquire(10.0)  # capped at 2


def test_refill_keeps_interval_phase() -> None:
    b = TokenBucket(max_tokens=1, tokens_per_fill=1, fill_interval=1.0)
    assert b.try_acquire(0.0)
    assert b.try_acquire(1.7)  # fill at t=1
    assert b.try_acquire(2.0)  # next fill at t=2, not t=2.7
    assert not b.try_acquire(2.5)


def test_tokens_per_fill() -> None:
    b = TokenBucket(max_tokens=10, tokens_per_fill=5, fill_interval=2.0)
    for _ in range(10):
        assert b.try_acquire(0.0)
    assert not b.try_acquire(1.0)
    assert sum(b.try_acquire(2.0) for _ in range(10)) == 5


LRL = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: limited
    match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]
  - name: free
    route: [{destination: {host: reviews}}]
---
apiVersion: meshbus.io/v1
kind: LocalRateLimit
metadata: {name: rl, namespace: default}
spec:
  hosts: [reviews]
  routes: [limited]
  tokenBucket: {maxTokens: 2, tokensPerFill: 1, fillInterval: 1s}
"""


def test_local_rate_limit_attached_to_named_route_only() -> None:
    t = build(SERVICES + LRL).outbound
    a, b, free = t.match(req(path="/a")), t.match(req(path="/b")), t.match(req(path="/c"))
    assert LOCAL_RATELIMIT not in free.filter_config
    bucket = a.filter_config[LOCAL_RATELIMIT]
    assert isinstance(bucket, TokenBucket) and bucket is b.filter_config[LOCAL_RATELIMIT]  # one per route
    assert bucket.try_acquire(0.0) and bucket.try_acquire(0.0)
    assert not bucket.try_acquire(0.0)
    assert LOCAL_RATELIMIT not in t.match(req(authority="ratings:9080")).filter_config


def test_local_rate_limit_without_filters_applies_to_default_routes() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: meshbus.io/v1
kind: LocalRateLimit
metadata: {name: all, namespace: default}
spec:
  tokenBucket: {maxTokens: 1, fillInterval: 1s}
"""
    )
    t = build(text).outbound
    rl = t.match(req(authority="ratings")).filter_config[LOCAL_RATELIMIT]
    assert isinstance(rl, TokenBucket) and rl.try_acquire(5.0) and not rl.try_acquire(5.5)
