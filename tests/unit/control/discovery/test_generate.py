"""Per-node generation: visibility (Sidecar egress), scoped policies, change routing, consistency, deltas."""

from __future__ import annotations

import dataclasses

import pytest

from meshbus.bus.config.resources import VirtualService
from meshbus.bus.schemas.discovery import ProxyStatus, ProxyStatusReply
from meshbus.control.discovery.delta import SentContent, plan
from meshbus.control.discovery.endpoints import synthesize
from meshbus.control.discovery.generate import SnapshotGenerator, check_consistent
from meshbus.control.discovery.model import ConfigEntry
from meshbus.control.discovery.push_request import PushRequest
from meshbus.control.discovery.registry import Registry
from meshbus.control.discovery.status import merge

from .helpers import dr, manifest, model_of, sidecar, vs, workload

AUTHZ = manifest(
    "AuthorizationPolicy",
    "reviews-allow",
    {"selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW"},
)


def mesh(*values: dict) -> tuple[SnapshotGenerator, Registry]:  # type: ignore[type-arg]
    reg = Registry()
    gen = SnapshotGenerator(reg)
    gen.set_model(model_of(*values))
    for i, (node, svc, ver) in enumerate(
        [
            ("reviews-1", "reviews", "v1"),
            ("reviews-2", "reviews", "v2"),
            ("ratings-1", "ratings", "v1"),
            ("pp-1", "productpage", "v1"),
        ]
    ):
        w = workload(node, svc, ver, address=f"10.0.0.{i + 1}")
        change = reg.upsert(w, now=0, wall=0)
        assert change is not None
        gen.update_services(change.services)
        gen.track(w)
    return gen, reg


def keys(gen: SnapshotGenerator, reg: Registry, node: str) -> set[str]:
    return set(gen.generate(reg.get(node).workload).keys)  # type: ignore[union-attr]


BASE = (
    vs("reviews", "reviews", ("v1", 50), ("v2", 50)),
    dr("reviews", "reviews", "v1", "v2"),
    vs("ratings", "ratings"),
    AUTHZ,
)


def test_without_sidecar_every_host_is_visible_and_policies_follow_selectors() -> None:
    gen, reg = mesh(*BASE)
    pp = keys(gen, reg, "pp-1")
    assert {
        "VirtualService.default.reviews",
        "DestinationRule.default.reviews",
        "VirtualService.default.ratings",
    } <= pp
    assert {"ServiceEntry.default.mesh-registry-reviews", "ServiceEntry.default.mesh-registry-ratings"} <= pp
    assert "AuthorizationPolicy.default.reviews-allow" not in pp  # selects reviews only
    assert "AuthorizationPolicy.default.reviews-allow" in keys(gen, reg, "reviews-1")


def test_synthesized_endpoints_point_at_inbound_listeners_with_labels() -> None:
    gen, reg = mesh(*BASE)
    se = next(e for e in gen.generate(reg.get("pp-1").workload).entries if e.name == "mesh-registry-reviews")  # type: ignore[union-attr]
    spec = se.value["spec"]
    assert spec["hosts"] == ["reviews.default.svc.cluster.local"] and spec["resolution"] == "STATIC"
    assert spec["ports"] == [{"number": 9080, "name": "http", "protocol": "HTTP"}]
    assert [(e["address"], e["ports"], e["labels"]["version"]) for e in spec["endpoints"]] == [
        ("10.0.0.1", {"http": 15006}, "v1"),
        ("10.0.0.2", {"http": 15006}, "v2"),
    ]
    # Order of registration does not change the content (stable digests).
    ws = reg.endpoints(("default", "reviews"))
    assert (
        synthesize(("default", "reviews"), ws).digest == synthesize(("default", "reviews"), ws[::-1]).digest
    )  # type: ignore[union-attr]


def test_sidecar_egress_limits_hosts_and_keeps_route_destinations() -> None:
    routed = vs("reviews", "reviews", ("v1", 100))
    routed["spec"]["http"][0]["mirror"] = {"host": "ratings"}
    gen, reg = mesh(
        routed,
        dr("reviews", "reviews", "v1", "v2"),
        dr("ratings", "ratings"),
        vs("details", "details"),
        sidecar("pp", ["./reviews.default.svc.cluster.local"], {"app": "productpage"}),
    )
    pp = keys(gen, reg, "pp-1")
    assert "VirtualService.default.reviews" in pp and "ServiceEntry.default.mesh-registry-reviews" in pp
    assert "VirtualService.default.details" not in pp
    # ratings is not in egress, but reviews' route mirrors to it: its DR and endpoints come along.
    assert {"DestinationRule.default.ratings", "ServiceEntry.default.mesh-registry-ratings"} <= pp
    assert "Sidecar.default.pp" in pp
    assert "DestinationRule.default.ratings" in keys(gen, reg, "reviews-1")  # no Sidecar selects it


def test_a_route_to_a_service_that_does_not_exist_yet_is_held_back() -> None:
    gen, reg = mesh(vs("details", "details"), vs("reviews", "reviews"))
    assert "VirtualService.default.details" not in keys(
        gen, reg, "pp-1"
    )  # would not build: no port, no service
    assert gen.class_view("").withheld == (
        ("VirtualService.default.details", "details.default.svc.cluster.local"),
    )
    change = reg.upsert(workload("details-1", "details"), now=0, wall=0)
    assert change is not None
    gen.update_services(change.services)
    assert "VirtualService.default.details" in keys(gen, reg, "pp-1")  # it exists now: the route goes out
    assert gen.class_view("").withheld == ()


def test_a_change_reaches_only_the_nodes_it_concerns() -> None:
    gen, _reg = mesh(*BASE, vs("details", "details"), sidecar("pp", ["./details"], {"app": "productpage"}))
    old = gen.model
    new = old.apply(
        [
            ConfigEntry.from_value(vs("ratings", "ratings", ("v1", 100)), 50),
            ConfigEntry.from_value(dr("ratings", "ratings", "v1"), 51),
        ]
    )
    gen.set_model(new, ["VirtualService.default.ratings", "DestinationRule.default.ratings"])
    req = PushRequest.of(
        "config", config={"VirtualService.default.ratings", "DestinationRule.default.ratings"}
    )
    assert gen.affected(req, old) == {"reviews-1", "reviews-2", "ratings-1"}  # pp only sees details
    req = PushRequest.of("config", config={"VirtualService.default.details"})
    assert gen.affected(req, old) == {"reviews-1", "reviews-2", "ratings-1", "pp-1"}
    # A policy change touches only the workloads it selects.
    assert gen.affected(
        PushRequest.of("config", config={"AuthorizationPolicy.default.reviews-allow"}), old
    ) == {
        "reviews-1",
        "reviews-2",
    }
    # Endpoints of ratings changed: pp does not call ratings.
    assert "pp-1" not in gen.affected(PushRequest.of("registry", services={("default", "ratings")}), old)
    assert gen.affected(PushRequest.of("x", full=True), old) == {
        "reviews-1",
        "reviews-2",
        "ratings-1",
        "pp-1",
    }


def test_sidecar_change_moves_nodes_between_classes() -> None:
    gen, reg = mesh(*BASE)
    assert gen.node_class["pp-1"] == ""
    side = ConfigEntry.from_value(sidecar("pp", ["./ratings"], {"app": "productpage"}), 60)
    moved = gen.set_model(gen.model.apply([side]), [side.key])
    assert moved == {"pp-1"}
    assert "VirtualService.default.reviews" not in keys(gen, reg, "pp-1")
    # Same Sidecar, wider egress: the class stays, its members must still be pushed.
    wider = ConfigEntry.from_value(sidecar("pp", ["./ratings", "./reviews"], {"app": "productpage"}), 61)
    assert gen.set_model(gen.model.apply([wider]), [wider.key]) == {"pp-1"}
    assert "VirtualService.default.reviews" in keys(gen, reg, "pp-1")


def test_digest_follows_content_only() -> None:
    gen, reg = mesh(*BASE)
    w = reg.get("pp-1").workload  # type: ignore[union-attr]
    first = gen.generate(w)
    assert gen.generate(w).digest == first.digest
    gen.set_model(gen.model.apply([ConfigEntry.from_value(vs("ratings", "ratings", ("v1", 100)), 99)]))
    assert gen.generate(w).digest != first.digest


def test_check_consistent_names_a_missing_subset() -> None:
    entries = [
        ConfigEntry.from_value(vs("reviews", "reviews", ("v3", 100)), 1),
        ConfigEntry.from_value(dr("reviews", "reviews", "v1"), 2),
    ]
    problems = check_consistent(entries)
    assert len(problems) == 1 and "subset 'v3'" in problems[0] and "spec.http[0].route[0]" in problems[0]
    assert check_consistent(entries[1:]) == []


def test_delta_only_on_an_unrefused_base_and_when_smaller() -> None:
    gen, reg = mesh(*BASE, *(dr(f"s{i}", f"s{i}") for i in range(10)))
    w = reg.get("pp-1").workload  # type: ignore[union-attr]
    before = gen.generate(w)
    base = SentContent(7, before.digest, before.keys)
    gen.set_model(gen.model.apply([ConfigEntry.from_value(dr("s3", "s3", "v1"), 100)]))
    after = gen.generate(w)
    p = plan(after, base)
    assert p.delta and p.base_version == 7 and [e.name for e in p.entries] == ["s3"]
    assert not plan(after, base, base_refused=True).delta  # it never ran the base
    assert not plan(after, None).delta
    shrunk = SentContent(7, before.digest, {**before.keys, "VirtualService.default.gone": "x"})
    assert plan(after, shrunk).removed == ["VirtualService.default.gone"]
    everything = SentContent(7, before.digest, {})
    assert not plan(after, everything).delta  # a delta as large as the whole is not worth it


def test_status_merge_takes_the_sender_row_and_latest_nack() -> None:
    common = dict(node="n1", service="reviews", namespace="default", registered_at=1.0, last_seen=5.0)
    owner = ProxyStatus(**common, sent_version=9, acked_version=8)  # type: ignore[arg-type]
    other = ProxyStatus(**common, acked_version=8, nack_version=9, nack_error="bad")  # type: ignore[arg-type]
    [view] = merge([ProxyStatusReply("r1", 2, [owner]), ProxyStatusReply("r2", 2, [other])])
    assert view.status == "NACK" and view.status_text == "NACK (v9): bad"
    acked = ProxyStatus(**{**common, "last_seen": 6.0}, acked_version=9)  # type: ignore[arg-type]
    [view] = merge([ProxyStatusReply("r1", 2, [owner]), ProxyStatusReply("r2", 2, [acked])])
    assert view.status == "SYNCED"


def test_every_proxy_gets_every_peer_authentication_for_auto_mtls() -> None:
    # A client's auto-mTLS reads the destination's PeerAuthentication (a DISABLE server gets
    # plaintext), so unlike other policies PeerAuthentications are not limited to what they select.
    reviews_off = manifest(
        "PeerAuthentication",
        "reviews-off",
        {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "DISABLE"}},
    )
    prod = manifest("PeerAuthentication", "prod", {"mtls": {"mode": "STRICT"}}, namespace="prod")
    gen, reg = mesh(*BASE, reviews_off, prod)
    for node in ("pp-1", "ratings-1", "reviews-1"):
        assert {"PeerAuthentication.default.reviews-off", "PeerAuthentication.prod.prod"} <= keys(
            gen, reg, node
        )
    old = gen.model
    gen.set_model(
        old.apply([], [("PeerAuthentication.default.reviews-off", 99)]),
        ["PeerAuthentication.default.reviews-off"],
    )
    req = PushRequest.of("config", config={"PeerAuthentication.default.reviews-off"})
    assert gen.affected(req, old) == {"reviews-1", "reviews-2", "ratings-1", "pp-1"}
    assert "PeerAuthentication.default.reviews-off" not in keys(gen, reg, "pp-1")
    assert gen.model.peer_authentications[0].key == "PeerAuthentication.prod.prod"


def test_entries_hold_the_typed_model_and_refuse_what_proxies_would_refuse() -> None:
    e = ConfigEntry.from_value(vs("reviews", "reviews", ("v1", 100)), 7)
    assert (
        isinstance(e.resource, VirtualService) and e.resource.spec.http[0].route[0].destination.subset == "v1"
    )
    assert e.resource.source.file == "config VirtualService.default.reviews@7"
    assert e.hosts == e.destinations == e.portless == {"reviews.default.svc.cluster.local"}
    bad = vs("reviews", "reviews", ("v1", 100))
    bad["spec"]["http"][0]["timeoutt"] = "1s"
    with pytest.raises(ValueError, match=r"VirtualService default/reviews: spec\.http\[0\]\.timeoutt"):
        ConfigEntry.from_value(bad, 8)


def test_a_service_whose_registrations_make_no_valid_service_entry_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gen, reg = mesh(*BASE)
    broken = dataclasses.replace(workload("bad-1", "bad"), ports={"http": 0}, inbound_port=0)
    change = reg.upsert(broken, now=0, wall=0)
    assert change is not None
    gen.update_services(change.services)
    gen.track(broken)
    assert ("default", "bad") not in gen.services
    assert "service default/bad left out of snapshots" in caplog.text and "ports[0].number" in caplog.text
    assert "ServiceEntry.default.mesh-registry-reviews" in keys(gen, reg, "pp-1")  # the rest is served


def mesh_config(name: str = "mesh", namespace: str = "istio-system", **spec: object) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "meshbus.io/v1",
        "kind": "MeshConfig",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


MESH_DENY = manifest("AuthorizationPolicy", "mesh-deny", {"action": "DENY", "rules": [{}]}, "mesh-root")


def test_the_mesh_config_reaches_every_proxy_and_names_the_root_namespace() -> None:
    gen, reg = mesh(*BASE, MESH_DENY)
    assert gen.model.root_namespace == "istio-system"
    assert "AuthorizationPolicy.mesh-root.mesh-deny" not in keys(gen, reg, "pp-1")  # not the root yet
    old = gen.model
    mc = ConfigEntry.from_value(mesh_config(rootNamespace="mesh-root"), 70)
    gen.set_model(old.apply([mc]), [mc.key])
    assert gen.model.root_namespace == "mesh-root"
    # Another root namespace changes what every proxy gets: every node is concerned.
    assert gen.affected(PushRequest.of("config", config={mc.key}), old) == {
        "reviews-1",
        "reviews-2",
        "ratings-1",
        "pp-1",
    }
    for node in ("reviews-1", "ratings-1", "pp-1"):
        assert {"MeshConfig.istio-system.mesh", "AuthorizationPolicy.mesh-root.mesh-deny"} <= keys(
            gen, reg, node
        )
    # A MeshConfig edit that keeps the root namespace still goes to every proxy (normalization, providers).
    old = gen.model
    edited = ConfigEntry.from_value(
        mesh_config(rootNamespace="mesh-root", pathNormalization={"normalization": "MERGE_SLASHES"}), 71
    )
    gen.set_model(old.apply([edited]), [edited.key])
    assert gen.affected(PushRequest.of("config", config={edited.key}), old) == {
        "reviews-1",
        "reviews-2",
        "ratings-1",
        "pp-1",
    }


def test_a_policy_bound_to_a_gateway_reaches_no_sidecar() -> None:
    bound = manifest(
        "AuthorizationPolicy",
        "edge-only",
        {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
            "rules": [{}],
        },
    )
    gen, reg = mesh(*BASE, bound)
    assert all(
        "AuthorizationPolicy.default.edge-only" not in keys(gen, reg, n) for n in ("reviews-1", "pp-1")
    )
    assert (
        gen.affected(PushRequest.of("config", config={"AuthorizationPolicy.default.edge-only"}), gen.model)
        == set()
    )
