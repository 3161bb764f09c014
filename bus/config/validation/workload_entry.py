"""Semantic checks for WorkloadEntry (also used for ServiceEntry endpoints)."""

from __future__ import annotations

from meshbus.bus.config.resources import Resource, WorkloadEntry
from meshbus.bus.config.service_entry import WorkloadEntrySpec
from meshbus.bus.config.validation.common import check_labels, host_problem
from meshbus.bus.config.validation.findings import Findings


def check_workload(f: Findings, path: list[str | int], we: WorkloadEntrySpec) -> None:
    if not we.address and not we.network:
        f.error([*path, "address"], "address is required")
    elif we.address and not we.address.startswith("unix://"):
        problem = host_problem(we.address, allow_wildcard=False)
        if problem:
            f.error(
                [*path, "address"], "address must be an IP address, a DNS name or unix:// path", we.address
            )
    check_labels(f, [*path, "labels"], we.labels)


def validate(resource: Resource, f: Findings) -> None:
    if isinstance(resource, WorkloadEntry):
        check_workload(f, ["spec"], resource.spec)
