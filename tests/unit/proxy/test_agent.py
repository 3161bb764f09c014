"""The mesh agent's sans-IO side: accept/ignore/NACK rules, deltas, the real build_runtime, disk state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshbus.bus.schemas.discovery import Snapshot
from meshbus.proxy.build.runtime import build_runtime
from meshbus.proxy.mesh.agent import parse_labels
from meshbus.proxy.mesh.snapshot_apply import ResourceCache, SnapshotApplier, load_state, save_state


def se(name: str, version: str = "v1", address: str = "10.0.0.1") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": f"mesh-registry-{name}", "namespace": "default"},
        "spec": {
            "hosts": [f"{name}.default.svc.cluster.local"],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": address, "ports": {"http": 15006}, "labels": {"version": version}}],
        },
    }


def vs(weight_v1: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    route = [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": weight_v1},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 100 - weight_v1},
    ]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": route, **(extra or {})}]},
    }


DR = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "reviews", "namespace": "default"},
    "spec": {
        "host": "reviews",
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    },
}


def snap(version: int, resources: list[dict[str, Any]], digest: str = "", **kw: Any) -> Snapshot:
    return Snapshot(
        version=version,
        digest=digest or f"d{version}",
        node="n1",
        nonce=f"x{version}",
        resources=resources,
        **kw,
    )


def weights(applier: SnapshotApplier) -> list[float]:
    dump = applier.runtime.config_dump()  # type: ignore[union-attr]
    vh = next(v for v in dump["listeners"]["outbound"]["virtualHosts"] if v["name"].startswith("reviews"))
    return [d["weight"] for d in vh["routes"][0]["destinations"]]


def test_full_snapshot_builds_the_runtime_and_acks() -> None:
    a = SnapshotApplier("n1", app_port=8080)
    out = a.offer(snap(3, [se("reviews"), DR, vs(100)]), now=1.0)
    assert out.action == "applied" and out.runtime is a.runtime
    assert (
        out.ack is not None and out.ack.error == "" and out.ack.applied_version == 3 and out.ack.nonce == "x3"
    )
    assert a.runtime.version == "3"  # type: ignore[union-attr]
    assert "outbound|9080|v1|reviews.default.svc.cluster.local" in a.runtime.clusters  # type: ignore[union-attr]
    assert weights(a) == [100.0]  # a 0-weight destination is dropped


def test_older_versions_are_ignored_and_a_duplicate_is_acked_again() -> None:
    a = SnapshotApplier("n1")
    a.offer(snap(5, [se("reviews")]), now=0)
    assert a.offer(snap(4, [se("ratings")]), now=0).action == "ignored"
    dup = a.offer(snap(5, [se("reviews")]), now=0)
    assert dup.action == "duplicate" and dup.ack is not None and dup.ack.error == ""
    assert a.offer(snap(5, [se("ratings")], digest="other"), now=0).action == "ignored"
    assert a.applied.version == 5 and a.stats["ignored"] == 2  # type: ignore[union-attr]


def test_unusable_snapshot_is_nacked_and_the_last_good_runtime_stays() -> None:
    a = SnapshotApplier("n1")
    a.offer(snap(1, [se("reviews"), DR, vs(100)]), now=0)
    good = a.runtime
    bad = vs(50, {"bogusField": 1})  # a field this proxy's schema does not know
    out = a.offer(snap(2, [se("reviews"), DR, bad]), now=0)
    assert out.action == "nacked" and out.runtime is None
    assert out.ack is not None and "bogusField" in out.ack.error and out.ack.error.startswith("meshbus: ")
    assert out.ack.applied_version == 1 and out.ack.version == 2
    assert a.runtime is good and a.applied.version == 1 and a.last_error  # type: ignore[union-attr]
    # A build-time refusal (validates, cannot be applied) is a NACK too.
    passthrough = se("ratings")
    passthrough["spec"]["resolution"] = "NONE"
    passthrough["spec"].pop("endpoints")
    out = a.offer(snap(3, [se("reviews"), DR, vs(100), passthrough]), now=0)
    assert out.action == "nacked" and "resolution" in out.ack.error  # type: ignore[union-attr]
    ok = a.offer(snap(4, [se("reviews"), DR, vs(20)]), now=0)
    assert ok.action == "applied" and a.last_error == "" and weights(a) == [20.0, 80.0]


def test_rebuild_builds_the_applied_snapshot_again_and_a_failure_keeps_the_runtime() -> None:
    # mesh mode's answer to a REMOTE filter described after the build (ProxyServer.mesh_rebuild)
    calls: list[int] = []

    def build(resources: Any, **kw: Any) -> Any:
        calls.append(len(resources))
        if len(calls) == 3:
            raise RuntimeError("boom")
        return build_runtime(resources, **kw)

    a = SnapshotApplier("n1", build=build)
    assert a.rebuild() is None and calls == []  # nothing applied yet
    a.offer(snap(7, [se("reviews"), DR, vs(30)]), now=0)
    first = a.runtime
    again = a.rebuild()
    assert again is not None and again is a.runtime and again is not first
    assert again.version == "7" and calls == [3, 3] and weights(a) == [30.0, 70.0]
    assert a.rebuild() is None and a.runtime is again and a.last_error == "meshbus: boom"


def test_delta_applies_on_its_base_only() -> None:
    a = SnapshotApplier("n1")
    a.offer(snap(1, [se("reviews"), se("ratings"), DR, vs(100)]), now=0)
    wrong = a.offer(snap(3, [vs(50)], delta=True, base_version=2), now=0)
    assert wrong.action == "need_full" and a.applied.version == 1  # type: ignore[union-attr]
    out = a.offer(
        snap(2, [vs(50)], delta=True, base_version=1, removed=["ServiceEntry.default.mesh-registry-ratings"]),
        now=0,
    )
    assert out.action == "applied"
    assert sorted(a.applied.resources) == [  # type: ignore[union-attr]
        "DestinationRule.default.reviews",
        "ServiceEntry.default.mesh-registry-reviews",
        "VirtualService.default.reviews",
    ]
    assert weights(a) == [50.0, 50.0]


def test_resource_cache_validates_only_what_changed() -> None:
    cache = ResourceCache()
    a = SnapshotApplier("n1", cache=cache)
    a.offer(snap(1, [se("reviews"), DR, vs(100)]), now=0)
    assert cache.validations == 3
    a.offer(snap(2, [se("reviews"), DR, vs(90)]), now=0)  # equal dicts are reused
    assert cache.validations == 4


def test_last_good_snapshot_survives_on_disk(tmp_path: Path) -> None:
    a = SnapshotApplier("n1")
    a.offer(snap(7, [se("reviews"), DR, vs(30)], config_revision=12), now=0)
    path = tmp_path / "state" / "snapshot.msgpack"
    save_state(path, a.applied, "n1")  # type: ignore[arg-type]
    assert [p.name for p in path.parent.iterdir()] == ["snapshot.msgpack"]  # no temp file left
    restored = load_state(path)
    assert restored is not None and restored.version == 7 and restored.config_revision == 12
    b = SnapshotApplier("n1")
    assert b.offer(restored, now=0).action == "applied" and weights(b) == [30.0, 70.0]
    assert load_state(tmp_path / "missing") is None
    (tmp_path / "junk").write_bytes(b"\xc1not msgpack")
    assert load_state(tmp_path / "junk") is None


def test_parse_labels() -> None:
    assert parse_labels(["version=v1", "app=reviews,tier=web"]) == {
        "version": "v1",
        "app": "reviews",
        "tier": "web",
    }
    with pytest.raises(ValueError, match="meshbus: bad label"):
        parse_labels(["novalue"])
