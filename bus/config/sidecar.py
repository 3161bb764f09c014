"""networking.istio.io Sidecar (sidecar.proto). Discovery honours egress hosts; the rest is accepted only."""

from __future__ import annotations

from typing import Literal

from meshbus.bus.config.destination_rule import ConnectionPoolSettings
from meshbus.bus.config.gateway import ServerTLSSettings
from meshbus.bus.config.types import IstioModel, Port, WorkloadSelector
from meshbus.bus.config.virtual_service import Destination

CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]


class SidecarPort(IstioModel):
    number: Port
    protocol: str = ""
    name: str = ""
    target_port: Port | None = None


class IstioIngressListener(IstioModel):
    port: SidecarPort
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    default_endpoint: str | None = None
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class IstioEgressListener(IstioModel):
    port: SidecarPort | None = None
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    hosts: tuple[str, ...]


class OutboundTrafficPolicy(IstioModel):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "ALLOW_ANY"
    egress_proxy: Destination | None = None


class SidecarSpec(IstioModel):
    workload_selector: WorkloadSelector | None = None
    ingress: tuple[IstioIngressListener, ...] | None = None
    egress: tuple[IstioEgressListener, ...] = ()
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
