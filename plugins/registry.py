"""Installed filters: the ``meshbus.filters`` entry-point group, read explicitly (nothing registers
itself on import).

An entry point's name is what a Plugin's ``filter:`` names; its value is a ``Filter`` subclass
(``stamp = meshbus_stamp:Stamp``). ``installed()`` lists them without importing any (for tables);
``load(name)`` imports one and checks it, with errors that name the distribution, the entry point
and what was expected. Two distributions declaring the same name is an error when that name is
loaded (which one would run is not for meshbus to guess).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from meshbus.plugins.api import (
    BodyMode,
    Filter,
    body_modes,
    check_filter_class,
    config_schema,
    implemented_hooks,
)

GROUP = "meshbus.filters"
NAME = re.compile(r"^[a-z0-9]([-_.a-z0-9]*[a-z0-9])?$")
"""What a filter name may be: lowercase letters, digits, '-', '_', '.' (one NATS subject token once
escaped, and a metric label)."""


class PluginLoadError(Exception):
    """A filter that cannot be loaded: unknown name, duplicate, import failure, not a Filter."""


@dataclass(frozen=True, slots=True)
class InstalledFilter:
    """One entry point of the group, as installed (not imported)."""

    name: str
    package: str
    version: str
    target: str
    """``module:attr``."""


@dataclass(frozen=True, slots=True)
class FilterInfo:
    """A loaded filter class and what the proxy, meshctl and a remote host need to know of it."""

    name: str
    cls: type[Filter]
    package: str
    version: str
    hooks: tuple[str, ...]
    request_body: BodyMode
    response_body: BodyMode

    @property
    def schema(self) -> dict[str, Any] | None:
        return config_schema(self.cls)

    def schema_json(self) -> str:
        schema = self.schema
        return "" if schema is None else json.dumps(schema, sort_keys=True)


def _dist(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "?", ""
    return dist.metadata["Name"] or dist.name, dist.version


def installed() -> list[InstalledFilter]:
    """Every entry point of the group, sorted by name (duplicates included: ``load`` refuses them)."""
    out = []
    for ep in entry_points(group=GROUP):
        package, version = _dist(ep)
        out.append(InstalledFilter(ep.name, package, version, ep.value))
    return sorted(out, key=lambda f: (f.name, f.package))


def names() -> list[str]:
    return sorted({f.name for f in installed()})


def load(name: str) -> FilterInfo:
    """Import the filter ``name`` and check it; PluginLoadError says why it cannot be used."""
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not eps:
        known = ", ".join(names()) or "none"
        raise PluginLoadError(f"meshbus: no installed filter named {name!r} (installed: {known})")
    if len({ep.value for ep in eps}) > 1:
        who = ", ".join(f"{_dist(ep)[0]} ({ep.value})" for ep in eps)
        raise PluginLoadError(f"meshbus: filter {name!r} is declared by more than one package: {who}")
    ep = eps[0]
    package, version = _dist(ep)
    where = f"entry point {name!r} = {ep.value!r} of {package} (group {GROUP})"
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginLoadError(f"meshbus: cannot import {where}: {type(exc).__name__}: {exc}") from exc
    try:
        cls = check_filter_class(obj, where)
    except TypeError as exc:
        raise PluginLoadError(str(exc)) from None
    return info_of(name, cls, package, version or cls.version)


def info_of(name: str, cls: type[Filter], package: str = "", version: str = "") -> FilterInfo:
    """A FilterInfo for a class given directly (tests, ``meshbus-filter-host --filter mod:Class``)."""
    req, resp = body_modes(cls)
    return FilterInfo(name, cls, package, version or cls.version, implemented_hooks(cls), req, resp)
