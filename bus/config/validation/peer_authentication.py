"""Semantic checks for PeerAuthentication (portLevelMtls needs a selector; port keys)."""

from __future__ import annotations

from meshbus.bus.config.resources import PeerAuthentication, Resource
from meshbus.bus.config.validation.common import check_labels
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, PeerAuthentication):
        return
    spec = resource.spec
    if spec.selector is not None:
        check_labels(f, ["spec", "selector", "matchLabels"], spec.selector.match_labels)
        if not spec.selector.match_labels:
            f.error(
                ["spec", "selector"], "selector needs at least one label (omit selector for namespace-wide)"
            )
    if spec.port_level_mtls and (spec.selector is None or not spec.selector.match_labels):
        f.error(["spec", "portLevelMtls"], "portLevelMtls requires a workload selector")
    for port in spec.port_level_mtls:
        if not 1 <= port <= 65535:
            f.error(["spec", "portLevelMtls", str(port)], "port must be a number in 1..65535", port)
