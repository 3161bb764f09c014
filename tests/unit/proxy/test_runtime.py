"""build_runtime: clusters from ServiceEntry + DestinationRule, policy layering, state carry-over, dump."""

from __future__ import annotations

import json

import pytest

from meshbus.bus.config import load_text
from meshbus.proxy.build.runtime import RuntimeBuildError, build_runtime
from tests.unit.proxy.conftest import SERVICES, build, load, req

pytestmark = pytest.mark.unit

R = "outbound|9080|{}|reviews.default.svc.cluster.local"


def test_clusters_per_port_and_subset_with_label_selected_endpoints() -> None:
    rt = build(SERVICES)
    assert {R.format(s) for s in ("", "v1", "v2", "v3")} <= set(rt.clusters)
    assert [e.address for e in rt.clusters[R.format("")].endpoints] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert [e.address for e in rt.clusters[R.format("v2")].endpoints] == ["10.0.0.2"]
    c = rt.clusters[R.format("v1")]
    assert (c.service, c.port, c.subset) == ("reviews.default.svc.cluster.local", 9080, "v1")


POLICY = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 100}}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {tcp: {maxConnections: 50}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      connectionPool: {http: {http1MaxPendingRequests: 5}}
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutive5xxErrors: 7}
"""


def test_subset_policy_overrides_top_level_block_by_block() -> None:
    text = SERVICES.split("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule")[0] + POLICY
    rt = build(text)
    top, v1, v2, v3 = (rt.clusters[R.format(s)] for s in ("", "v1", "v2", "v3"))
    assert top.lb_policy == "ROUND_ROBIN" and top.pool.max_connections == 50  # port level wins
    assert v1.lb_policy == "ROUND_ROBIN" and v1.pool.max_connections == 50  # inherits
    assert v2.lb_policy == "RANDOM" and v2.pool.max_connections == 50
    # a subset's connectionPool replaces the whole block (Istio merges per top-level field)
    assert v3.pool.max_pending == 5 and v3.pool.max_connections == 2**32 - 1
    assert v3.outlier is not None and v3.outlier.consecutive_5xx == 7
    assert top.outlier is None


def test_destination_rule_short_host_in_its_namespace_and_wildcard() -> None:
    text = (
        SERVICES.split("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule")[0]
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: default}
spec:
  host: "*.default.svc.cluster.local"
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: other-ns, namespace: prod}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""
    )
    rt = build(text)
    # "reviews" in namespace prod is reviews.prod..., so only the wildcard applies here
    assert rt.clusters[R.format("")].lb_policy == "RANDOM"


def test_service_entry_port_name_errors() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bad, namespace: default}
spec:
  hosts: [bad]
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.9, ports: {grpc: 9000}}]
"""
    # Decoded resources even if the validator objects too: the builder must not rely on it.
    with pytest.raises(
        RuntimeBuildError, match=r"ServiceEntry default/bad: spec\.endpoints\[0\]\.ports\.grpc"
    ):
        build_runtime(load_text(text, "se.yaml").resources)


def test_resolution_none_is_refused_with_reason() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: NONE
  ports: [{number: 80, name: http}]
"""
    with pytest.raises(RuntimeBuildError) as ei:
        build_runtime(load(text))
    assert str(ei.value).startswith("meshbus: test.yaml:")
    assert "ServiceEntry default/ext: spec.resolution: resolution NONE" in str(ei.value)


def test_dns_service_entry_without_endpoints_uses_the_host() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 80, name: http}]
"""
    rt = build(text)
    route = rt.outbound.match(req(authority="api.example.com"))
    ep = rt.clusters[route.pick_destination(0).cluster].pick(None, 0.0)
    assert ep is not None and ep.key == ("api.example.com", 80)


def test_state_carries_over_for_persisting_endpoints() -> None:
    od = """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 100}
    connectionPool: {http: {http1MaxPendingRequests: 10}}
"""
    name = "outbound|9080||ratings.default.svc.cluster.local"
    old = build(SERVICES + od)
    c = old.clusters[name]
    ep = c.endpoints[0]
    ep.active_requests = 3
    c.record_result(ep, status=500, error=None, now=100.0)
    assert ep.ejected(100.0)
    c.breaker.try_enqueue_pending()
    # new config: the pending limit changes and a second endpoint appears
    new_text = SERVICES.replace(
        "- {address: 10.0.1.1, labels: {version: v1}}",
        "- {address: 10.0.1.1, labels: {version: v1}}\n  - {address: 10.0.1.2}",
    ) + od.replace("10}}", "20}}")
    new = build(new_text, previous=old)
    nc = new.clusters[name]
    kept = next(e for e in nc.endpoints if e.key == ("10.0.1.1", 9080))
    fresh = next(e for e in nc.endpoints if e.key == ("10.0.1.2", 9080))
    assert kept is ep and kept.ejected(101.0) and kept.active_requests == 3 and kept.times_ejected == 1
    assert not fresh.ejected(101.0) and fresh.times_ejected == 0
    assert nc.breaker is c.breaker and nc.breaker.pending == 1 and nc.breaker.max_pending == 20
    assert nc.pick(None, 101.0) is fresh  # the ejected host stays out after the swap


def test_removed_endpoint_state_is_not_reused() -> None:
    old = build(SERVICES)
    name = R.format("")
    old.clusters[name].endpoints[0].times_ejected = 4
    new = build(SERVICES.replace("10.0.0.1", "10.0.0.9"), previous=old)
    assert all(e.times_ejected == 0 for e in new.clusters[name].endpoints)


def test_version_is_a_stable_digest_unless_given() -> None:
    a, b = build(SERVICES), build(SERVICES)
    assert a.version == b.version and len(a.version) == 16
    assert build(SERVICES.replace("10.0.0.3", "10.0.0.4")).version != a.version
    assert build(SERVICES, version="kv-42").version == "kv-42"


def test_config_dump_is_json_and_readable() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: split
    timeout: 2s
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v3}, weight: 10}
"""
    )
    rt = build(text, app_port=8080, version="v7")
    dump = rt.config_dump(now=0.0)
    json.dumps(dump)  # JSON-able
    assert dump["version"] == "v7"
    vhs = {vh["name"]: vh for vh in dump["listeners"]["outbound"]["virtualHosts"]}
    vh = vhs["reviews.default.svc.cluster.local:9080"]
    assert "reviews:9080" in vh["domains"] and "reviews" in vh["domains"]
    jason, split = vh["routes"]
    assert jason["match"] == {"headers": {"end-user": {"exact": "jason"}}}
    assert jason["fault"]["abort"]["httpStatus"] == 500
    assert split["destinations"] == [
        {"cluster": R.format("v1"), "weight": 90.0},
        {"cluster": R.format("v3"), "weight": 10.0},
    ]
    assert split["timeout"] == 2.0 and split["retries"]["attempts"] == 2
    assert (
        dump["listeners"]["inbound"]["virtualHosts"][0]["routes"][0]["destinations"][0]["cluster"]
        == "inbound|8080||"
    )
    clusters = {c["name"]: c for c in dump["clusters"]}
    assert clusters[R.format("v2")]["endpoints"][0]["address"] == "10.0.0.2"
    assert clusters[R.format("v2")]["endpoints"][0]["healthy"] is True


def test_non_istio_kinds_are_ignored() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""
    )
    assert build(text).outbound.match(req()) is not None
