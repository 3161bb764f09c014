"""networking.istio.io ServiceEntry and WorkloadEntry (service_entry.proto, workload_entry.proto).

ServiceEntry with ``resolution: STATIC`` and ``endpoints`` is how standalone proxies learn services.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshbus.bus.config.types import IstioModel, NonNegativeInt, Port, WorkloadSelector


class ServicePort(IstioModel):
    number: Port
    protocol: str = ""
    name: str = ""  # required by Istio; validation/service_entry.py says so with the file line
    target_port: Port | None = None


class WorkloadEntrySpec(IstioModel):
    address: str = ""
    ports: dict[str, Port] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: NonNegativeInt | None = None
    service_account: str = ""


Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]


class ServiceEntrySpec(IstioModel):
    hosts: tuple[str, ...] = ()
    addresses: tuple[str, ...] | None = None
    ports: tuple[ServicePort, ...] = ()
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Resolution = "NONE"
    endpoints: tuple[WorkloadEntrySpec, ...] = ()
    workload_selector: WorkloadSelector | None = None
    export_to: tuple[str, ...] | None = None
    subject_alt_names: tuple[str, ...] | None = None
