"""Load balancing: round robin, least request (P2C), random, consistent hash; skipping ejected hosts."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.core.lb import HashPolicy
from tests.unit.proxy.conftest import SERVICES, SeqRng, build, req

pytestmark = pytest.mark.unit


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)]


def test_round_robin_cycles() -> None:
    c = Cluster("c", "s", 80, endpoints=eps(3), lb_policy="ROUND_ROBIN")
    picks = [c.pick(None, 0.0).address for _ in range(6)]
    assert picks == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] * 2


def test_round_robin_skips_ejected() -> None:
    endpoints = eps(3)
    c = Cluster("c", "s", 80, endpoints=endpoints, lb_policy="ROUND_ROBIN")
    endpoints[1].ejected_until = 50.0
    c._any_ejected = True
    picks = {c.pick(None, 10.0).address for _ in range(6)}
    assert picks == {"10.0.0.1", "10.0.0.3"}
    # after the ejection expires the host is used again even before tick()
    assert "10.0.0.2" in {c.pick(None, 60.0).address for _ in range(6)}


def test_least_request_prefers_fewer_active() -> None:
    endpoints = eps(2)
    endpoints[0].active_requests = 5
    # rng picks index 0 then 1: the less loaded second one wins
    c = Cluster("c", "s", 80, endpoints=endpoints, lb_policy="LEAST_REQUEST", rng=SeqRng([0.1, 0.9]))
    assert c.pick(None, 0.0) is endpoints[1]


def test_least_request_distribution_avoids_loaded_host() -> None:
    endpoints = eps(4)
    endpoints[0].active_requests = 100
    c = Cluster("c", "s", 80, endpoints=endpoints, rng=random.Random(7).random)
    counts = Counter(c.pick(None, 0.0).address for _ in range(4000))
    # host 1 is chosen only when both random choices land on it: 1/16 of picks
    assert counts["10.0.0.1"] < 4000 / 16 * 1.3
    assert c.lb_policy == "LEAST_REQUEST"  # Istio's default


def test_random_uses_injected_rng() -> None:
    c = Cluster("c", "s", 80, endpoints=eps(4), lb_policy="RANDOM", rng=SeqRng([0.0, 0.26, 0.51, 0.99]))
    assert [c.pick(None, 0.0).address for _ in range(4)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_no_endpoints_or_all_ejected_gives_none() -> None:
    assert Cluster("c", "s", 80).pick(None, 0.0) is None
    endpoints = eps(2)
    for e in endpoints:
        e.ejected_until = 100.0
    c = Cluster("c", "s", 80, endpoints=endpoints)
    assert c.pick(None, 1.0) is None


def test_consistent_hash_is_stable_and_spreads() -> None:
    endpoints = eps(5)
    c = Cluster("c", "s", 80, endpoints=endpoints, hash_policy=HashPolicy("header", "x-user"))
    keys = [c.hash_key(req(headers={"x-user": f"user-{i}"})) for i in range(500)]
    first = [c.pick(k, 0.0) for k in keys]
    assert first == [c.pick(k, 0.0) for k in keys]  # same key, same host
    counts = Counter(e.address for e in first)
    assert len(counts) == 5 and min(counts.values()) > 50


def test_consistent_hash_same_across_cluster_instances() -> None:
    # blake2b, not hash(): every worker process must agree.
    a = Cluster("c", "s", 80, endpoints=eps(4), hash_policy=HashPolicy("header", "x-user"))
    b = Cluster("c", "s", 80, endpoints=eps(4), hash_policy=HashPolicy("header", "x-user"))
    for i in range(50):
        k = a.hash_key(req(headers={"x-user": str(i)}))
        assert a.pick(k, 0.0).key == b.pick(k, 0.0).key


def test_consistent_hash_ejection_moves_only_that_hosts_keys() -> None:
    endpoints = eps(4)
    c = Cluster("c", "s", 80, endpoints=endpoints, hash_policy=HashPolicy("source_ip"))
    keys = [c.hash_key(req(source_ip=f"192.168.0.{i}")) for i in range(200)]
    before = [c.pick(k, 0.0) for k in keys]
    victim = endpoints[2]
    victim.ejected_until = 100.0
    c._any_ejected = True
    after = [c.pick(k, 1.0) for k in keys]
    assert victim not in after
    for b, a in zip(before, after, strict=True):
        if b is not victim:
            assert a is b


def test_hash_key_sources() -> None:
    hdr = HashPolicy("header", "x-id")
    assert hdr.key(req(headers={"x-id": "a"})) == hdr.key(req(headers={"x-id": "a"}))
    assert hdr.key(req()) is None
    ck = HashPolicy("cookie", "session")
    assert ck.key(req(headers={"cookie": "a=1; session=abc"})) == ck.key(
        req(headers={"cookie": "session=abc"})
    )
    assert ck.key(req(headers={"cookie": "a=1"})) is None
    q = HashPolicy("query", "u")
    assert q.key(req(path="/x?u=7")) == q.key(req(path="/y?z=1&u=7")) is not None
    ip = HashPolicy("source_ip")
    assert ip.key(req(source_ip="1.2.3.4")) != ip.key(req(source_ip="1.2.3.5"))


def test_missing_hash_key_falls_back_to_random() -> None:
    c = Cluster(
        "c", "s", 80, endpoints=eps(3), hash_policy=HashPolicy("header", "x"), rng=SeqRng([0.0, 0.5, 0.9])
    )
    assert [c.pick(None, 0.0).address for _ in range(3)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


LB_RULES = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}}
"""


def test_lb_from_destination_rule() -> None:
    rt = build(SERVICES + LB_RULES.replace("ttl: 0s", "path: /"))
    c = rt.clusters["outbound|9080||ratings.default.svc.cluster.local"]
    assert c.lb_policy == "RING_HASH"
    assert c.hash_key(req(headers={"cookie": "user=u1"})) is not None
    assert rt.clusters["outbound|9080||reviews.default.svc.cluster.local"].lb_policy == "LEAST_REQUEST"


@pytest.mark.parametrize(
    ("lb_yaml", "policy"),
    [
        ("{simple: ROUND_ROBIN}", "ROUND_ROBIN"),
        ("{simple: RANDOM}", "RANDOM"),
        ("{simple: LEAST_CONN}", "LEAST_REQUEST"),
        ("{simple: UNSPECIFIED}", "LEAST_REQUEST"),
        ("{consistentHash: {httpHeaderName: X-User}}", "RING_HASH"),
        ("{consistentHash: {useSourceIp: true}}", "RING_HASH"),
        ("{consistentHash: {httpQueryParameterName: uid}}", "RING_HASH"),
    ],
)
def test_simple_lb_names(lb_yaml: str, policy: str) -> None:
    text = (
        SERVICES
        + f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: default}}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {lb_yaml}
"""
    )
    rt = build(text)
    assert rt.clusters["outbound|9080||ratings.default.svc.cluster.local"].lb_policy == policy
