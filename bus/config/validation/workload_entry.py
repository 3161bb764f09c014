"""Semantic checks for WorkloadEntry (also used for ServiceEntry endpoints): Istio's validateWorkloadEntry."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from meshbus.bus.config.resources import Resource, WorkloadEntry
from meshbus.bus.config.service_entry import WorkloadEntrySpec
from meshbus.bus.config.validation.common import check_labels, host_problem, port_name_problem
from meshbus.bus.config.validation.findings import Findings

UNIX_PREFIX = "unix://"


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def check_workload(
    f: Findings,
    path: list[str | int],
    we: WorkloadEntrySpec,
    *,
    service_ports: Collection[str] | None = None,
    allow_fqdn: bool = True,
    require_address: bool = True,
) -> None:
    """``service_ports``: the port names of the ServiceEntry the endpoint belongs to (None: a WorkloadEntry)."""
    addr = we.address
    apath = [*path, "address"]
    if not addr:
        if not require_address:
            pass
        elif not we.network:
            f.error(apath, "address is required")
        else:
            f.warn(apath, f'address is unset with network "{we.network}"')
    elif addr.startswith(UNIX_PREFIX):
        sock = addr[len(UNIX_PREFIX) :]
        if not sock.startswith(("/", "@")):
            f.error(apath, "UDS must be an absolute path or abstract socket", addr)
        elif sock.endswith("/"):
            f.error(apath, "UDS may not be a dir", addr)
        if we.ports:
            f.error([*path, "ports"], "UDS may not include ports")
        if service_ports is not None and len(service_ports) != 1:
            f.error(apath, "exactly 1 service port required for unix endpoints", addr)
    elif not is_ip(addr):
        if not allow_fqdn:
            f.error(apath, "endpoint address is not a valid IP address", addr)
        elif host_problem(addr, allow_wildcard=False, allow_ip=False):
            f.error(apath, "endpoint address is not a valid FQDN or an IP address", addr)
    for name in we.ports:
        problem = port_name_problem(name)
        if problem:
            f.error([*path, "ports", name], problem, name)
        elif service_ports is not None and name not in service_ports:
            declared = ", ".join(sorted(n for n in service_ports if n)) or "none"
            f.error(
                [*path, "ports", name],
                f"endpoint port is not defined by the service entry (declared: {declared})",
            )
    check_labels(f, [*path, "labels"], we.labels)


def validate(resource: Resource, f: Findings) -> None:
    if isinstance(resource, WorkloadEntry):
        check_workload(f, ["spec"], resource.spec)
