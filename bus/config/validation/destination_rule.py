"""Semantic checks for DestinationRule (subsets, load balancer, TLS mode, outlier detection)."""

from __future__ import annotations

import re

from meshbus.bus.config.destination_rule import (
    ClientTLSSettings,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    TrafficPolicy,
)
from meshbus.bus.config.resources import DestinationRule, Resource
from meshbus.bus.config.validation.common import check_host, check_labels
from meshbus.bus.config.validation.findings import Findings

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, DestinationRule):
        return
    spec = resource.spec
    check_host(f, ["spec", "host"], spec.host)
    if spec.traffic_policy is not None:
        traffic_policy(f, ["spec", "trafficPolicy"], spec.traffic_policy)
    seen: dict[str, int] = {}
    for i, subset in enumerate(spec.subsets):
        path: list[str | int] = ["spec", "subsets", i]
        if not _DNS1123_LABEL.match(subset.name) or len(subset.name) > 63:
            f.error([*path, "name"], "subset name must be a DNS-1123 label (a-z, 0-9, '-')", subset.name)
        if subset.name in seen:
            f.error(
                [*path, "name"], f"duplicate subset name (also subsets[{seen[subset.name]}])", subset.name
            )
        seen.setdefault(subset.name, i)
        check_labels(f, [*path, "labels"], subset.labels)
        if subset.traffic_policy is not None:
            traffic_policy(f, [*path, "trafficPolicy"], subset.traffic_policy)


def traffic_policy(f: Findings, path: list[str | int], tp: TrafficPolicy | PortTrafficPolicy) -> None:
    if tp.load_balancer is not None:
        _load_balancer(f, [*path, "loadBalancer"], tp.load_balancer)
    if tp.tls is not None:
        _tls(f, [*path, "tls"], tp.tls)
    if tp.outlier_detection is not None:
        _outlier(f, [*path, "outlierDetection"], tp.outlier_detection)
    if isinstance(tp, TrafficPolicy):
        ports: dict[int, int] = {}
        for i, pls in enumerate(tp.port_level_settings):
            ppath = [*path, "portLevelSettings", i]
            if pls.port is None or pls.port.number is None:
                f.error([*ppath, "port"], "port.number is required in portLevelSettings")
            else:
                if pls.port.number in ports:
                    f.error(
                        [*ppath, "port", "number"], "duplicate port in portLevelSettings", pls.port.number
                    )
                ports.setdefault(pls.port.number, i)
            traffic_policy(f, ppath, pls)


def _load_balancer(f: Findings, path: list[str | int], lb: LoadBalancerSettings) -> None:
    if lb.simple is not None and lb.consistent_hash is not None:
        f.error(path, "set only one of simple and consistentHash")
    if lb.simple == "LEAST_CONN":
        f.warn([*path, "simple"], "LEAST_CONN is deprecated; meshbus treats it as LEAST_REQUEST", lb.simple)
    ch = lb.consistent_hash
    if ch is not None:
        keys = [
            name
            for name, value in (
                ("httpHeaderName", ch.http_header_name),
                ("httpCookie", ch.http_cookie),
                ("useSourceIp", ch.use_source_ip),
                ("httpQueryParameterName", ch.http_query_parameter_name),
            )
            if value not in (None, False, "")
        ]
        if len(keys) != 1:
            got = ", ".join(keys) if keys else "none"
            f.error(
                [*path, "consistentHash"],
                "set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName "
                f"(got {got})",
            )
        if ch.ring_hash is not None and ch.maglev is not None:
            f.error([*path, "consistentHash"], "set only one of ringHash and maglev")
        if ch.http_cookie is not None and not ch.http_cookie.name:
            f.error([*path, "consistentHash", "httpCookie", "name"], "cookie name must not be empty")


_ISTIO_MUTUAL_FORBIDDEN = (
    ("clientCertificate", "client_certificate"),
    ("privateKey", "private_key"),
    ("caCertificates", "ca_certificates"),
    ("credentialName", "credential_name"),
    ("caCrl", "ca_crl"),
)


def _tls(f: Findings, path: list[str | int], tls: ClientTLSSettings) -> None:
    if tls.mode == "ISTIO_MUTUAL":
        for alias, attr in _ISTIO_MUTUAL_FORBIDDEN:
            if getattr(tls, attr):
                f.error(
                    [*path, alias],
                    f"{alias} cannot be set with mode ISTIO_MUTUAL (meshbus supplies the certificates)",
                )
    elif tls.mode == "MUTUAL" and not tls.credential_name:
        for alias, attr in (("clientCertificate", "client_certificate"), ("privateKey", "private_key")):
            if not getattr(tls, attr):
                f.error([*path, alias], f"{alias} is required with mode MUTUAL (or set credentialName)")
    elif tls.mode == "DISABLE":
        set_fields = [a for a, attr in _ISTIO_MUTUAL_FORBIDDEN if getattr(tls, attr)]
        if set_fields or tls.sni or tls.subject_alt_names:
            f.warn([*path, "mode"], "TLS settings are ignored with mode DISABLE")


def _outlier(f: Findings, path: list[str | int], od: OutlierDetection) -> None:
    if od.max_ejection_percent is not None and not 0 <= od.max_ejection_percent <= 100:
        f.error([*path, "maxEjectionPercent"], "must be between 0 and 100", od.max_ejection_percent)
    if od.min_health_percent is not None and not 0 <= od.min_health_percent <= 100:
        f.error([*path, "minHealthPercent"], "must be between 0 and 100", od.min_health_percent)
    if od.consecutive_errors is not None and od.consecutive_gateway_errors is not None:
        f.error(
            [*path, "consecutiveErrors"],
            "set only consecutiveGatewayErrors (consecutiveErrors is its deprecated name)",
        )
    if od.consecutive_errors is not None and od.consecutive_errors < 0:
        f.error([*path, "consecutiveErrors"], "must be >= 0", od.consecutive_errors)
