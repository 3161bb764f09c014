"""Semantic checks for meshbus.io Plugin (schema only; a plugin's own config is not checked yet: the plugin loader does not exist until the plugins issue)."""

from __future__ import annotations

import re

from meshbus.bus.config.resources import Plugin, Resource
from meshbus.bus.config.validation.common import check_labels
from meshbus.bus.config.validation.findings import Findings

# Dotted and namespaced, like Caddy module ids and Envoy filter names (STYLE.md E3).
FILTER_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, Plugin):
        return
    spec = resource.spec
    if not FILTER_ID.match(spec.filter):
        f.error(
            ["spec", "filter"],
            'filter id must be dotted lowercase, e.g. "meshbus.filters.http.ratelimit"',
            spec.filter,
        )
    for i, route in enumerate(spec.routes):
        if not route:
            f.error(["spec", "routes", i], "route name must not be empty")
    if spec.workload_selector is not None:
        check_labels(f, ["spec", "workloadSelector", "labels"], spec.workload_selector.labels)
