"""Registry from heartbeats with an injected clock; replica ownership."""

from __future__ import annotations

from collections import Counter

import msgpack

from meshbus.bus import codec
from meshbus.bus.schemas.discovery import (
    APP_HEALTHY,
    APP_NOT_PROBED,
    APP_UNHEALTHY,
    APP_UNKNOWN,
    Heartbeat,
    Register,
)
from meshbus.control.discovery.registry import Registry
from meshbus.control.discovery.replicas import ReplicaSet, owner_of

from .helpers import workload


def test_heartbeat_registers_refreshes_and_expiry_removes() -> None:
    reg = Registry(expiry=3.0)
    w = workload("reviews-v1-a", "reviews")
    change = reg.heartbeat(Heartbeat(w, applied_version=4, applied_digest="d4"), now=0.0, wall=100.0)
    assert change is not None and change.kind == "added" and change.services == {("default", "reviews")}
    assert reg.get("reviews-v1-a").applied_version == 4  # type: ignore[union-attr]
    assert reg.heartbeat(Heartbeat(w), now=2.5, wall=102.5) is None  # same workload: refresh only
    assert reg.expire(5.0) == []  # 2.5 s since the last beat
    gone = reg.expire(5.6)
    assert [c.node_id for c in gone] == ["reviews-v1-a"] and gone[0].reason == "expired"
    assert len(reg) == 0 and reg.endpoints(("default", "reviews")) == []


def test_changed_labels_are_an_update_of_old_and_new_service() -> None:
    reg = Registry()
    reg.upsert(workload("n1", "reviews"), now=0, wall=0)
    gen = reg.generation
    moved = workload("n1", "ratings", version="v2")
    change = reg.upsert(moved, now=1, wall=1)
    assert change is not None and change.kind == "updated"
    assert change.services == {("default", "reviews"), ("default", "ratings")}
    assert reg.generation == gen + 1
    assert reg.services() == [("default", "ratings")]


def test_hosts_are_the_fqdns_of_services_with_a_workload() -> None:
    reg = Registry()
    for node, service in (("r1", "reviews"), ("r2", "reviews"), ("p1", "productpage")):
        reg.upsert(workload(node, service), now=0, wall=0)
    assert reg.hosts() == ["productpage.default.svc.cluster.local", "reviews.default.svc.cluster.local"]
    reg.remove("p1")
    assert reg.hosts() == ["reviews.default.svc.cluster.local"]


def test_deregister_is_immediate_and_touch_all_restarts_clocks() -> None:
    reg = Registry(expiry=1.0)
    for i in range(3):
        reg.upsert(workload(f"n{i}", "svc"), now=0.0, wall=0.0)
    assert reg.remove("n0") is not None and reg.remove("n0") is None
    reg.touch_all(10.0)  # the replica was cut off from NATS until t=10
    assert reg.expire(10.5) == []
    assert {c.node_id for c in reg.expire(11.5)} == {"n1", "n2"}
    assert [w.node_id for w in reg.endpoints(("default", "svc"))] == []


def test_rendezvous_owner_is_stable_and_spreads_nodes() -> None:
    replicas = ["r1", "r2", "r3"]
    nodes = [f"node-{i}" for i in range(300)]
    owners = {n: owner_of(n, replicas) for n in nodes}
    assert owners == {n: owner_of(n, list(reversed(replicas))) for n in nodes}  # order-independent
    assert min(Counter(owners.values()).values()) > 60  # roughly even
    after = {n: owner_of(n, ["r1", "r3"]) for n in nodes}
    moved = [n for n in nodes if owners[n] != after[n]]
    assert all(owners[n] == "r2" for n in moved)  # only r2's nodes move when r2 leaves


def test_replica_set_liveness() -> None:
    rs = ReplicaSet("me", expiry=3.0)
    assert rs.live() == ["me"] and rs.owns("anything")
    assert rs.heard("other", 0.0) and not rs.heard("other", 1.0)
    assert not rs.heard("me", 1.0)
    assert rs.live() == ["me", "other"]
    assert not rs.expire(3.5) and rs.expire(4.5)
    rs.heard("other", 5.0)
    assert rs.heard("other", 5.5, leaving=True) and rs.live() == ["me"]


def _beat(w: Register, health: str, detail: str = "") -> Heartbeat:
    return Heartbeat(w, app_health=health, app_health_detail=detail)


def test_an_unhealthy_app_leaves_the_endpoints_and_returns_when_healthy() -> None:
    reg = Registry()
    a, b = workload("reviews-a", "reviews"), workload("reviews-b", "reviews", address="10.0.0.2")
    key = ("default", "reviews")
    reg.heartbeat(_beat(a, APP_HEALTHY), now=0, wall=0)
    reg.heartbeat(_beat(b, APP_UNKNOWN, "no probe answered yet"), now=0, wall=0)
    assert [w.node_id for w in reg.endpoints(key)] == ["reviews-a"]  # not probed healthy yet: out
    assert reg.heartbeat(_beat(b, APP_UNKNOWN, "GET :9080/healthz answered 500"), now=1, wall=1) is None
    joined = reg.heartbeat(_beat(b, APP_HEALTHY), now=1, wall=1)
    assert joined is not None and joined.reason == "app-healthy" and joined.services == {key}
    assert [w.node_id for w in reg.endpoints(key)] == ["reviews-a", "reviews-b"]
    gen = reg.generation
    left = reg.heartbeat(_beat(b, APP_UNHEALTHY, "timed out"), now=2, wall=2)
    assert left is not None and (left.kind, left.reason) == ("updated", "app-unhealthy")
    assert reg.generation == gen + 1
    assert [w.node_id for w in reg.endpoints(key)] == ["reviews-a"]
    assert "reviews-b" in reg and reg.get("reviews-b").app_health_detail == "timed out"  # type: ignore[union-attr]
    # a heartbeat that says nothing about the app (an older proxy, or no --app-health) serves
    back = reg.heartbeat(Heartbeat(b), now=3, wall=3)
    assert back is not None and back.reason == "app-healthy" and len(reg.endpoints(key)) == 2


def test_when_no_app_of_a_service_is_healthy_all_stay() -> None:
    reg = Registry()
    a, b = workload("reviews-a", "reviews"), workload("reviews-b", "reviews", address="10.0.0.2")
    reg.heartbeat(_beat(a, APP_UNHEALTHY, "x"), now=0, wall=0)
    reg.heartbeat(_beat(b, APP_HEALTHY), now=0, wall=0)
    assert [w.node_id for w in reg.endpoints(("default", "reviews"))] == ["reviews-b"]
    assert reg.heartbeat(_beat(b, APP_UNHEALTHY, "y"), now=1, wall=1) is not None
    assert [w.node_id for w in reg.endpoints(("default", "reviews"))] == ["reviews-a", "reviews-b"]


def test_a_heartbeat_from_before_app_health_decodes_as_not_probed() -> None:
    w = workload("reviews-a", "reviews")
    data, headers = codec.encode(Heartbeat(w, seq=7))
    old = msgpack.unpackb(data)
    del old["app_health"], old["app_health_detail"]  # what a proxy without the fields sends
    hb = codec.decode(msgpack.packb(old), headers, Heartbeat)
    assert (hb.seq, hb.app_health, hb.app_health_detail) == (7, APP_NOT_PROBED, "")
