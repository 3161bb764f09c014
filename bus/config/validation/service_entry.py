"""Semantic checks for ServiceEntry (hosts, ports, resolution vs endpoints)."""

from __future__ import annotations

import ipaddress

from meshbus.bus.config.resources import Resource, ServiceEntry
from meshbus.bus.config.validation.common import check_host, check_labels
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.workload_entry import check_workload

# Istio protocol names (pkg/config/protocol), case-insensitive.
PROTOCOLS = frozenset(
    {
        "HTTP",
        "HTTPS",
        "GRPC",
        "GRPC-WEB",
        "HTTP2",
        "HTTP_PROXY",
        "MONGO",
        "REDIS",
        "MYSQL",
        "TCP",
        "TLS",
        "UDP",
    }
)


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, ServiceEntry):
        return
    spec = resource.spec
    if not spec.hosts:
        f.error(["spec", "hosts"], "at least one host is required")
    for i, host in enumerate(spec.hosts):
        check_host(f, ["spec", "hosts", i], host, allow_ip=False)
        if host.startswith("*") and spec.resolution in ("DNS", "DNS_ROUND_ROBIN"):
            f.error(
                ["spec", "hosts", i],
                f"wildcard hosts cannot be resolved with resolution {spec.resolution}",
                host,
            )
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for i, port in enumerate(spec.ports):
        path: list[str | int] = ["spec", "ports", i]
        if not port.name:
            f.error([*path, "name"], "port name is required")
        elif port.name in names:
            f.error([*path, "name"], f"duplicate port name (also ports[{names[port.name]}])", port.name)
        names.setdefault(port.name, i)
        if port.number in numbers:
            f.error(
                [*path, "number"], f"duplicate port number (also ports[{numbers[port.number]}])", port.number
            )
        numbers.setdefault(port.number, i)
        if port.protocol and port.protocol.upper() not in PROTOCOLS:
            f.error(
                [*path, "protocol"],
                f"unknown protocol (known: {', '.join(sorted(PROTOCOLS))})",
                port.protocol,
            )
    if not spec.ports:
        f.error(["spec", "ports"], "at least one port is required")
    if spec.resolution == "STATIC" and not spec.endpoints and spec.workload_selector is None:
        f.error(["spec", "endpoints"], "resolution STATIC needs endpoints with addresses")
    if spec.resolution == "NONE" and spec.endpoints:
        f.error(["spec", "endpoints"], "endpoints are not allowed with resolution NONE (use STATIC or DNS)")
    if spec.endpoints and spec.workload_selector is not None:
        f.error(["spec", "workloadSelector"], "set only one of endpoints and workloadSelector")
    for i, address in enumerate(spec.addresses or ()):
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            f.error(["spec", "addresses", i], "must be an IP address or CIDR block", address)
    if spec.workload_selector is not None:
        check_labels(f, ["spec", "workloadSelector", "labels"], spec.workload_selector.labels)
    for i, ep in enumerate(spec.endpoints):
        path = ["spec", "endpoints", i]
        check_workload(f, path, ep)
        if spec.resolution == "STATIC" and ep.address and not ep.address.startswith("unix://"):
            try:
                ipaddress.ip_address(ep.address)
            except ValueError:
                f.error(
                    [*path, "address"],
                    "resolution STATIC needs an IP address (use DNS for names)",
                    ep.address,
                )
        for name in ep.ports:
            if name not in names:
                declared = ", ".join(sorted(n for n in names if n)) or "none"
                f.error(
                    [*path, "ports", name],
                    f"endpoint port refers to an undeclared port name (declared: {declared})",
                    name,
                )
