"""Semantic checks for PeerAuthentication: Istio's ValidatePeerAuthentication and its CRD rules."""

from __future__ import annotations

from meshbus.bus.config.resources import PeerAuthentication, Resource
from meshbus.bus.config.validation.common import check_policy_scope
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, PeerAuthentication):
        return
    spec = resource.spec
    labels = spec.selector.match_labels if spec.selector is not None else None
    check_policy_scope(f, ["spec", "selector", "matchLabels"], labels, None, None)
    if spec.port_level_mtls and not labels:
        f.error(["spec", "portLevelMtls"], "portLevelMtls requires a selector with labels")
    for port in spec.port_level_mtls:
        if not 1 <= port <= 65535:
            f.error(["spec", "portLevelMtls", str(port)], "port must be between 1-65535", port)
