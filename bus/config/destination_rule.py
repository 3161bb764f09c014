"""networking.istio.io DestinationRule (destination_rule.proto). Keep in sync with proxy/core/cluster.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshbus.bus.config.types import (
    Duration,
    IstioModel,
    NonNegativeInt,
    Percent,
    PortSelector,
    WorkloadSelector,
    deprecated,
)


class HTTPCookie(IstioModel):
    name: str
    path: str | None = None
    ttl: Duration | None = None
    attributes: tuple[dict[str, str], ...] | None = None


class RingHash(IstioModel):
    minimum_ring_size: NonNegativeInt | None = None


class MagLev(IstioModel):
    table_size: NonNegativeInt | None = None


class ConsistentHashLB(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: NonNegativeInt | None = deprecated("ringHash.minimumRingSize")


class LocalityDistribute(IstioModel):
    from_: str = Field(default="", alias="from")
    to: dict[str, int] = Field(default_factory=dict)


class LocalityFailover(IstioModel):
    from_: str = Field(default="", alias="from")
    to: str = ""


class LocalityLoadBalancerSetting(IstioModel):
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()
    enabled: bool | None = None


class WarmupConfiguration(IstioModel):
    duration: Duration
    minimum_percent: Percent | None = None
    aggression: float | None = None


SimpleLB = Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]


class LoadBalancerSettings(IstioModel):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None


class TcpKeepalive(IstioModel):
    probes: NonNegativeInt | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(IstioModel):
    max_connections: NonNegativeInt | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(IstioModel):
    http1_max_pending_requests: NonNegativeInt | None = None
    http2_max_requests: NonNegativeInt | None = None
    max_requests_per_connection: NonNegativeInt | None = None
    max_retries: NonNegativeInt | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: NonNegativeInt | None = None


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    consecutive_5xx_errors: NonNegativeInt | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_gateway_errors: NonNegativeInt | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: NonNegativeInt | None = None
    outlier_detection_http_error_codes: tuple[int, ...] | None = None
    # proxy/core/outlier.py counts it as gateway errors, as Envoy did for the old field.
    consecutive_errors: int | None = deprecated("consecutiveGatewayErrors")


TLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class ClientTLSSettings(IstioModel):
    mode: TLSMode = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class PortTrafficPolicy(IstioModel):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(IstioModel):
    protocol: Literal["CONNECT", "POST"] = "CONNECT"
    target_host: str
    target_port: int


class ProxyProtocol(IstioModel):
    version: Literal["V1", "V2"] = "V1"


class RetryBudget(IstioModel):
    percent: Percent | None = None
    min_retry_concurrency: NonNegativeInt | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


class Subset(IstioModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioModel):
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: tuple[str, ...] | None = None
    workload_selector: WorkloadSelector | None = None
