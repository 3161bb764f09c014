"""The Plugin kind: which workloads and sides it applies to, and the apply-time check of its filter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from meshbus.bus.config.loader import load_text
from meshbus.bus.config.meshbus_kinds import plugin_selects
from meshbus.bus.config.resources import Plugin
from meshbus.bus.config.result import Validation
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.plugin import Problem, check_filter

pytestmark = pytest.mark.unit


def plugin(spec: str) -> Plugin:
    text = f"apiVersion: meshbus.io/v1\nkind: Plugin\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}"
    result = load_text(text, "p.yaml")
    assert result.ok, result.validation.render()
    (res,) = result.resources
    assert isinstance(res, Plugin)
    return res


def test_match_modes_and_ports_pick_the_sides_as_wasm_plugin_does() -> None:
    spec = plugin("  filter: stamp\n").spec
    assert spec.applies("inbound", 9080) and spec.applies("outbound", None)  # no match: everything
    spec = plugin("  filter: stamp\n  match: [{mode: SERVER, ports: [{number: 9080}]}]\n").spec
    assert spec.applies("inbound", 9080)
    assert not spec.applies("inbound", 9090) and not spec.applies("outbound", 9080)
    spec = plugin("  filter: stamp\n  match: [{mode: CLIENT}, {mode: SERVER, ports: [{number: 1}]}]\n").spec
    assert spec.applies("outbound", 5) and spec.applies("inbound", 1) and not spec.applies("inbound", 2)
    spec = plugin("  filter: stamp\n  match: [{mode: CLIENT_AND_SERVER}]\n").spec
    assert spec.applies("outbound", 5) and spec.applies("inbound", 6)


def test_selection_is_the_namespace_or_the_root_namespace_and_every_selector_label() -> None:
    res = plugin("  filter: stamp\n  selector: {matchLabels: {app: shelf}}\n")
    assert plugin_selects("shop", res.spec, "shop", {"app": "shelf", "v": "1"})
    assert not plugin_selects("shop", res.spec, "shop", {"app": "cart"})
    assert not plugin_selects("shop", res.spec, "other", {"app": "shelf"})
    assert plugin_selects("shop", res.spec, "other", {"app": "shelf"}, root_namespace="shop")


class Catalog:
    def __init__(
        self, installed: Sequence[str] = (), remote: Sequence[str] = (), problems: list[Problem] | None = None
    ):
        self._installed, self._remote, self._problems = list(installed), list(remote), problems or []

    def installed(self, name: str) -> bool:
        return name in self._installed

    def installed_names(self) -> Sequence[str]:
        return self._installed

    def remote(self, name: str) -> bool:
        return name in self._remote

    def problems(self, name: str, placement: str, config: Mapping[str, Any] | None) -> list[Problem]:
        return self._problems


def checked(res: Plugin, catalog: Catalog) -> Validation:
    f = Findings(res)
    check_filter(res, catalog, f)
    return f.validation


def test_an_unknown_filter_is_an_error_in_process_and_a_warning_remote() -> None:
    v = checked(plugin("  filter: stamp\n"), Catalog(installed=["json-schema"]))
    assert [e.render() for e in v.errors] == [
        'p.yaml:5: Plugin shop/p: spec.filter: no installed filter of this name (installed: json-schema) (got "stamp")'
    ]
    v = checked(plugin("  filter: stamp\n  placement: REMOTE\n"), Catalog())
    assert v.errors == [] and "no meshbus-filter-host serves this filter now" in v.warnings[0].message


def test_config_problems_are_errors_naming_the_field_under_plugin_config() -> None:
    res = plugin("  filter: stamp\n  pluginConfig:\n    value: [1]\n")
    v = checked(
        res, Catalog(installed=["stamp"], problems=[(("value",), "Input should be a valid string", [1])])
    )
    assert [e.render() for e in v.errors] == [
        "p.yaml:7: Plugin shop/p: spec.pluginConfig.value: Input should be a valid string (got [1])"
    ]
