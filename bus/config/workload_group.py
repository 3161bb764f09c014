"""networking.istio.io WorkloadGroup and ProxyConfig (workload_group.proto, proxy_config.proto).

meshbus workloads register themselves (and a sidecar takes its settings from its command line), so
both are validated and stored but not acted on; fates.py says so.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from meshbus.bus.config.service_entry import WorkloadEntrySpec
from meshbus.bus.config.types import IstioModel, PolicySelector

_PROBE_PORT = Field(ge=0, le=4294967295)


class ObjectMeta(IstioModel):
    labels: dict[str, str] = Field(default_factory=dict, max_length=256)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=256)


class HTTPHeader(IstioModel):
    name: str | None = Field(default=None, pattern=r"^[-_A-Za-z0-9]+$")
    value: str | None = None


class HTTPGetAction(IstioModel):
    path: str | None = None
    port: int = _PROBE_PORT
    host: str | None = None
    scheme: str | None = None
    http_headers: tuple[HTTPHeader, ...] = ()


class TCPSocketAction(IstioModel):
    port: int = _PROBE_PORT
    host: str | None = None


class ExecAction(IstioModel):
    command: tuple[str, ...]


class GrpcHealthCheckAction(IstioModel):
    port: int | None = Field(default=None, ge=0, le=4294967295)
    service: str | None = None


class ReadinessProbe(IstioModel):
    initial_delay_seconds: int | None = Field(default=None, ge=0)
    timeout_seconds: int | None = Field(default=None, ge=0)
    period_seconds: int | None = Field(default=None, ge=0)
    success_threshold: int | None = Field(default=None, ge=0)
    failure_threshold: int | None = Field(default=None, ge=0)
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    grpc: GrpcHealthCheckAction | None = None


class WorkloadGroupSpec(IstioModel):
    metadata: ObjectMeta | None = None
    template: WorkloadEntrySpec
    probe: ReadinessProbe | None = None


class ProxyImage(IstioModel):
    image_type: str | None = None


class ProxyConfigSpec(IstioModel):
    selector: PolicySelector | None = None
    concurrency: int | None = Field(default=None, ge=0, le=2**31 - 1)
    environment_variables: dict[str, Annotated[str, Field(max_length=2048)]] = Field(default_factory=dict)
    image: ProxyImage | None = None
