"""Semantic checks for ServiceEntry: Istio's ValidateServiceEntry (hosts, ports, resolution vs endpoints)."""

from __future__ import annotations

import ipaddress

from meshbus.bus.config.resources import Resource, ServiceEntry
from meshbus.bus.config.validation.common import (
    check_alpha_selector,
    check_host,
    host_problem,
    port_name_problem,
)
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.workload_entry import check_workload, is_ip

# Istio protocol names (pkg/config/protocol.Parse), case-insensitive.
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
_HTTP = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
_TLS = frozenset({"HTTPS", "TLS"})


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, ServiceEntry):
        return
    spec = resource.spec
    labels = spec.workload_selector.labels if spec.workload_selector is not None else None
    check_alpha_selector(f, ["spec", "workloadSelector", "labels"], labels, "ServiceEntry")
    if spec.workload_selector is not None and spec.endpoints:
        f.error(["spec", "workloadSelector"], "only one of WorkloadSelector or Endpoints can be set")
    if not spec.hosts:
        f.error(["spec", "hosts"], "at least one host is required")
    for i, host in enumerate(spec.hosts):
        if host == "*":
            f.error(["spec", "hosts", i], "hostname cannot be wildcard", host)
            continue
        check_host(f, ["spec", "hosts", i], host, allow_ip=False, allow_partial=True)
        if "*" in host and not host.startswith("*.") and spec.resolution != "DYNAMIC_DNS":
            f.warn(["spec", "hosts", i], "partial wildcard hosts match nothing but themselves in Istio", host)
    cidr = False
    for i, address in enumerate(spec.addresses or ()):
        cidr = cidr or "/" in address
        try:
            ipaddress.ip_network(address, strict=False) if "/" in address else ipaddress.ip_address(address)
        except ValueError:
            f.error(["spec", "addresses", i], "must be an IP address or CIDR block", address)
    if cidr and spec.resolution not in ("NONE", "STATIC"):
        f.error(["spec", "addresses"], "CIDR addresses are allowed only for NONE/STATIC resolution types")
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for i, port in enumerate(spec.ports):
        path: list[str | int] = ["spec", "ports", i]
        problem = port_name_problem(port.name)
        if problem:
            f.error([*path, "name"], problem, port.name)
        elif port.name in names:
            f.error(
                [*path, "name"], f"Duplicate value: port name (also ports[{names[port.name]}])", port.name
            )
        names.setdefault(port.name, i)
        if port.number in numbers:
            f.error(
                [*path, "number"],
                f"port number cannot be duplicated (also ports[{numbers[port.number]}])",
                port.number,
            )
        numbers.setdefault(port.number, i)
        if port.protocol and port.protocol.upper() not in PROTOCOLS:
            f.error(
                [*path, "protocol"],
                f"unsupported protocol (known: {', '.join(sorted(PROTOCOLS))})",
                port.protocol,
            )
    _resolution(f, resource, set(names))
    if spec.resolution != "NONE" and len(spec.hosts) > 1:
        if any(p.protocol.upper() not in _HTTP | _TLS for p in spec.ports):
            f.error(["spec", "hosts"], "multiple hosts provided with non-HTTP, non-TLS ports")


def _resolution(f: Findings, se: ServiceEntry, port_names: set[str]) -> None:
    spec = se.spec
    if spec.resolution == "NONE":
        if spec.endpoints:
            f.error(["spec", "endpoints"], "NONE mode cannot set endpoints (use STATIC or DNS)")
        if spec.workload_selector is not None:
            f.warn(
                ["spec", "workloadSelector"],
                "workloadSelector should not be set when resolution mode is NONE",
            )
    elif spec.resolution == "STATIC":
        if not spec.endpoints and spec.workload_selector is None:
            f.warn(["spec", "endpoints"], "resolution STATIC without endpoints: the service has no instances")
        for i, ep in enumerate(spec.endpoints):
            check_workload(f, ["spec", "endpoints", i], ep, service_ports=port_names, allow_fqdn=False)
    elif spec.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not spec.endpoints:
            for i, host in enumerate(spec.hosts):
                if host != "*" and host_problem(host, allow_wildcard=False, allow_ip=False):
                    f.error(
                        ["spec", "hosts", i],
                        f"hosts must be FQDN if no endpoints are provided for resolution mode {spec.resolution}",
                        host,
                    )
                    break
        if spec.resolution == "DNS_ROUND_ROBIN" and len(spec.endpoints) > 1:
            f.error(["spec", "endpoints"], "DNS_ROUND_ROBIN mode cannot have multiple endpoints")
        for i, ep in enumerate(spec.endpoints):
            check_workload(f, ["spec", "endpoints", i], ep, service_ports=port_names)
            if ep.address and not is_ip(ep.address) and ep.address.startswith("unix://"):
                f.error(
                    ["spec", "endpoints", i, "address"],
                    "endpoint address is not a valid FQDN or an IP address",
                )
    elif spec.resolution == "DYNAMIC_DNS":
        for i, host in enumerate(spec.hosts):
            if not host.startswith("*"):
                f.error(["spec", "hosts", i], "host must be wildcarded for resolution mode DYNAMIC_DNS", host)
        if spec.addresses:
            f.error(["spec", "addresses"], "addresses cannot be set for resolution type DYNAMIC_DNS")
        if spec.endpoints:
            f.error(["spec", "endpoints"], "endpoints cannot be set for resolution type DYNAMIC_DNS")
