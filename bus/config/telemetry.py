"""telemetry.istio.io Telemetry (telemetry.proto, with the limits of Istio's CRD schema).

Validated so a broken one is refused; meshbus's telemetry does not read it yet (issue 13), which
fates.py says.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshbus.bus.config.types import Duration, IstioModel, PolicySelector, PolicyTargetReference

WorkloadMode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]


class ProviderRef(IstioModel):
    name: str = Field(min_length=1)


class LiteralTag(IstioModel):
    value: str = Field(min_length=1)


class EnvironmentTag(IstioModel):
    name: str = Field(min_length=1)
    default_value: str | None = None


class HeaderTag(IstioModel):
    name: str = Field(min_length=1)
    default_value: str | None = None


class FormatterTag(IstioModel):
    value: str = Field(min_length=1)


class CustomTag(IstioModel):
    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None
    formatter: FormatterTag | None = None


class TracingSelector(IstioModel):
    mode: WorkloadMode | None = None


class Tracing(IstioModel):
    match: TracingSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    random_sampling_percentage: float | None = Field(default=None, ge=0, le=100)
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None
    disable_context_propagation: bool | None = None


MetricName = Literal[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
]


class MetricSelector(IstioModel):
    metric: MetricName | None = None
    custom_metric: str | None = Field(default=None, min_length=1)
    mode: WorkloadMode | None = None


class TagOverride(IstioModel):
    operation: Literal["UPSERT", "REMOVE"] | None = None
    value: str | None = None


class MetricsOverrides(IstioModel):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict)


class Metrics(IstioModel):
    providers: tuple[ProviderRef, ...] = ()
    overrides: tuple[MetricsOverrides, ...] = ()
    reporting_interval: Duration | None = None


class AccessLoggingFilter(IstioModel):
    expression: str | None = None


class AccessLoggingSelector(IstioModel):
    mode: WorkloadMode | None = None


class AccessLogging(IstioModel):
    match: AccessLoggingSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    disabled: bool | None = None
    filter: AccessLoggingFilter | None = None


class TelemetrySpec(IstioModel):
    selector: PolicySelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = Field(default=None, max_length=16)
    tracing: tuple[Tracing, ...] = ()
    metrics: tuple[Metrics, ...] = ()
    access_logging: tuple[AccessLogging, ...] = ()
