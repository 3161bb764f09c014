"""Semantic checks for meshbus.io Plugin, and the check of its pluginConfig against the filter.

``validate`` runs with every other kind's checks (schema-level: the filter name, the selector, match
ports, risky combinations). ``check_filter`` is the apply-time check that needs to know the filters:
meshbus-config (control/config) and ``meshctl analyze`` call it with a ``FilterCatalog`` built from
the installed filters (meshbus.plugins.registry) and the remote hosts live on the bus. It is here so
the rule reads the same wherever it runs; the catalog is how bus/ learns of filters without
importing them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from meshbus.bus.config.resources import Plugin, Resource
from meshbus.bus.config.validation.common import check_policy_scope
from meshbus.bus.config.validation.findings import Findings

# An entry-point name: lowercase letters, digits, '-', '_', '.' (meshbus.plugins.registry.NAME).
FILTER_NAME = re.compile(r"^[a-z0-9]([-_.a-z0-9]*[a-z0-9])?$")

Problem = tuple[Sequence[str | int], str, Any]
"""(path below pluginConfig, message, value or None)."""


class FilterCatalog(Protocol):
    """What the checker needs to know of filters (meshbus.control.config.filters implements it)."""

    def installed(self, name: str) -> bool:
        """Whether a filter of this name is installed where the check runs."""
        ...

    def installed_names(self) -> Sequence[str]: ...

    def remote(self, name: str) -> bool:
        """Whether a host of this filter is live on the bus (and published its schema)."""
        ...

    def problems(self, name: str, placement: str, config: Mapping[str, Any] | None) -> list[Problem]:
        """What is wrong with ``config`` for the filter (its Config, or the host's JSON Schema)."""
        ...


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, Plugin):
        return
    spec = resource.spec
    if not FILTER_NAME.match(spec.filter):
        f.error(
            ["spec", "filter"],
            "filter must be the name of an installed filter (its meshbus.filters entry point: lowercase "
            "letters, digits, '-', '_' and '.') or of a meshbus-filter-host",
            spec.filter,
        )
    labels = spec.selector.match_labels if spec.selector is not None else None
    check_policy_scope(f, ["spec", "selector", "matchLabels"], labels, None, None)
    for i, match in enumerate(spec.match):
        numbers = [p.number for p in match.ports]
        for j, n in enumerate(numbers):
            if n in numbers[:j]:
                f.error(["spec", "match", i, "ports", j, "number"], "Duplicate value", n)
    if spec.fail_strategy == "FAIL_OPEN" and spec.phase in ("AUTHN", "AUTHZ"):
        f.warn(
            ["spec", "failStrategy"],
            f"FAIL_OPEN on an {spec.phase} plugin lets requests through unchecked whenever the filter fails",
        )
    if spec.timeout > 60:
        f.error(["spec", "timeout"], "timeout must be at most 60s (it holds the request)", spec.timeout)


def check_filter(resource: Resource, catalog: FilterCatalog, f: Findings) -> None:
    """The filter exists (IN_PROCESS: installed, else an error; REMOTE: a host is live, else a warning)
    and pluginConfig suits it: every problem is an error naming ``spec.pluginConfig.<field>``."""
    if not isinstance(resource, Plugin):
        return
    spec = resource.spec
    name = spec.filter
    if spec.placement == "IN_PROCESS":
        if not catalog.installed(name):
            known = ", ".join(catalog.installed_names()) or "none"
            f.error(["spec", "filter"], f"no installed filter of this name (installed: {known})", name)
            return
    elif not catalog.remote(name):
        f.warn(
            ["spec", "filter"],
            "no meshbus-filter-host serves this filter now: its pluginConfig is not checked, and until a "
            f"host runs, requests get failStrategy {spec.fail_strategy}",
            name,
        )
        return
    for path, message, value in catalog.problems(name, spec.placement, spec.plugin_config):
        f.error(["spec", "pluginConfig", *path], message, value)
