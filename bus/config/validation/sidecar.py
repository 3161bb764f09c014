"""Semantic checks for Sidecar (egress hosts in ns/dnsName form)."""

from __future__ import annotations

from meshbus.bus.config.resources import Resource, Sidecar
from meshbus.bus.config.validation.common import check_alpha_selector, check_namespaced_hosts
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, Sidecar):
        return
    spec = resource.spec
    if not (spec.egress or spec.ingress or spec.outbound_traffic_policy or spec.inbound_connection_pool):
        f.error(["spec"], "empty Sidecar: set egress, ingress or outboundTrafficPolicy")
    labels = spec.workload_selector.labels if spec.workload_selector is not None else None
    check_alpha_selector(f, ["spec", "workloadSelector", "labels"], labels, "Sidecar")
    for i, egress in enumerate(spec.egress):
        path: list[str | int] = ["spec", "egress", i, "hosts"]
        if not egress.hosts:
            f.error(path, "at least one host is required")
        check_namespaced_hosts(f, path, egress.hosts, require_namespace=True)
    ports: dict[int, int] = {}
    for i, ingress in enumerate(spec.ingress or ()):
        n = ingress.port.number
        if n in ports:
            f.error(["spec", "ingress", i, "port", "number"], f"duplicate port (also ingress[{ports[n]}])", n)
        ports.setdefault(n, i)
