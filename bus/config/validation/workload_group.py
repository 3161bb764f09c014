"""Semantic checks for WorkloadGroup and ProxyConfig (Istio's validators and CRD rules); not enforced."""

from __future__ import annotations

from meshbus.bus.config.resources import ProxyConfig, Resource, WorkloadGroup
from meshbus.bus.config.validation.common import check_policy_scope
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.workload_entry import check_workload


def validate(resource: Resource, f: Findings) -> None:
    if isinstance(resource, ProxyConfig):
        sel = resource.spec.selector
        check_policy_scope(
            f, ["spec", "selector", "matchLabels"], sel.match_labels if sel else None, None, None
        )
        return
    if not isinstance(resource, WorkloadGroup):
        return
    spec = resource.spec
    # Istio checks the template's labels and CRD rules, not a WorkloadEntry's address requirement.
    check_workload(f, ["spec", "template"], spec.template, require_address=False)
    probe = spec.probe
    if probe is None:
        return
    actions = [n for n in ("httpGet", "tcpSocket", "exec", "grpc") if getattr(probe, _attr(n)) is not None]
    if len(actions) > 1:
        f.error(
            ["spec", "probe"], f"set only one of httpGet, tcpSocket, exec, grpc (got {', '.join(actions)})"
        )
    for name in ("httpGet", "tcpSocket", "grpc"):
        action = getattr(probe, _attr(name))
        port = getattr(action, "port", None)
        if port is not None and not 0 < port <= 65535:
            f.error(["spec", "probe", name, "port"], "port must be between 1-65535", port)
    if probe.http_get is not None and probe.http_get.scheme not in (None, "", "HTTP", "HTTPS"):
        f.error(
            ["spec", "probe", "httpGet", "scheme"],
            "scheme must be one of [HTTP, HTTPS]",
            probe.http_get.scheme,
        )


def _attr(name: str) -> str:
    return {"httpGet": "http_get", "tcpSocket": "tcp_socket"}.get(name, name)
