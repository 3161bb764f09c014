"""Which proxies get a Plugin: its namespace or MeshConfig's root namespace, and its selector."""

from __future__ import annotations

from typing import Any

import pytest

from meshbus.control.discovery.generate import SnapshotGenerator
from meshbus.control.discovery.model import ConfigEntry
from meshbus.control.discovery.push_request import PushRequest
from meshbus.control.discovery.registry import Registry
from tests.unit.control.discovery.helpers import model_of, workload

pytestmark = pytest.mark.unit


def meshbus_kind(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "meshbus.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def plugin(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"filter": "stamp"}
    if labels is not None:
        spec["selector"] = {"matchLabels": labels}
    return meshbus_kind("Plugin", name, namespace, spec)


def test_plugins_select_by_namespace_selector_and_the_mesh_configs_root_namespace() -> None:
    plugins = (
        plugin("mine", "default", {"app": "reviews"}),
        plugin("whole-ns", "default"),
        plugin("other-ns", "shop"),
        plugin("mesh-wide", "mesh-root"),
        plugin("old-root", "istio-system"),
    )
    model = model_of(*plugins)
    names = {e.name for e in model.scoped_for("default", {"app": "reviews"}) if e.kind == "Plugin"}
    assert names == {"mine", "whole-ns", "old-root"}  # istio-system: the root without a MeshConfig
    assert {e.name for e in model.scoped_for("default", {"app": "ratings"}) if e.kind == "Plugin"} == {
        "whole-ns",
        "old-root",
    }
    rooted = model_of(
        *plugins, meshbus_kind("MeshConfig", "mesh", "mesh-root", {"rootNamespace": "mesh-root"})
    )
    scoped = rooted.scoped_for("default", {"app": "reviews"})
    assert {e.name for e in scoped if e.kind == "Plugin"} == {"mine", "whole-ns", "mesh-wide"}
    assert [e.kind for e in scoped].count("MeshConfig") == 1  # every proxy gets it: it selects with it too


def test_a_mesh_config_change_concerns_every_proxy_and_a_plugin_only_those_it_selects() -> None:
    reg = Registry()
    gen = SnapshotGenerator(reg)
    for w in (workload("reviews-1", "reviews"), workload("ratings-1", "ratings")):
        reg.upsert(w, now=0, wall=0)
        gen.track(w)
    old = model_of(plugin("mine", "default", {"app": "reviews"}))
    gen.set_model(old)
    new = old.apply(
        [
            ConfigEntry.from_value(
                meshbus_kind("MeshConfig", "mesh", "istio-system", {"rootNamespace": "x"}), 9
            )
        ]
    )
    gen.set_model(new, ["MeshConfig.istio-system.mesh"])
    assert gen.affected(PushRequest.of("config", config={"MeshConfig.istio-system.mesh"}), old) == {
        "reviews-1",
        "ratings-1",
    }
    assert gen.affected(PushRequest.of("config", config={"Plugin.default.mine"}), old) == {"reviews-1"}
