"""What meshbus accepts but ignores, host naming, and the result types' rendering."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from meshbus.bus.config import FieldError, Level, Source, Validation
from meshbus.bus.config.hosts import host_matches, looks_external, to_fqdn
from meshbus.bus.config.loader import _model_args
from meshbus.bus.config.resources import RESOURCE_TYPES
from meshbus.bus.config.types import UNIMPLEMENTED_KEY

pytestmark = pytest.mark.unit

# Istio fields meshbus accepts with a "not implemented yet" warning. When proxy/ or control/discovery
# start honouring one, drop its unimplemented() marker and remove it here, in the same change.
UNIMPLEMENTED = {
    "AuthorizationPolicySpec.targetRef",
    "AuthorizationPolicySpec.targetRefs",
    "ConsistentHashLB.maglev",
    "DestinationRuleSpec.exportTo",
    "DestinationRuleSpec.workloadSelector",
    "FaultAbort.grpcStatus",
    "FaultAbort.http2Error",
    "FaultDelay.exponentialDelay",
    "HTTPCookie.attributes",
    "HTTPCookie.path",
    "HTTPCookie.ttl",
    "HTTPMatchRequest.statPrefix",
    "HTTPRetry.retryIgnorePreviousHosts",
    "HTTPRetry.retryRemoteLocalities",
    "HTTPRoute.delegate",
    "HTTPSettings.h2UpgradePolicy",
    "HTTPSettings.http2KeepAlive",
    "HTTPSettings.maxConcurrentStreams",
    "HTTPSettings.useClientProtocol",
    "IstioEgressListener.bind",
    "IstioEgressListener.captureMode",
    "IstioEgressListener.port",
    "IstioIngressListener.captureMode",
    "JWTRule.presence",
    "LoadBalancerSettings.localityLbSetting",
    "LoadBalancerSettings.warmup",
    "LoadBalancerSettings.warmupDurationSecs",
    "OutboundTrafficPolicy.egressProxy",
    "OutlierDetection.consecutiveLocalOriginFailures",
    "OutlierDetection.outlierDetectionHttpErrorCodes",
    "OutlierDetection.splitExternalLocalOriginErrors",
    "RequestAuthenticationSpec.targetRef",
    "RequestAuthenticationSpec.targetRefs",
    "ServiceEntrySpec.addresses",
    "ServiceEntrySpec.exportTo",
    "ServiceEntrySpec.subjectAltNames",
    "ServiceEntrySpec.workloadSelector",
    "SidecarSpec.inboundConnectionPool",
    "SidecarSpec.ingress",
    "SidecarSpec.outboundTrafficPolicy",
    "Source.notTrustDomains",
    "Source.trustDomains",
    "TCPSettings.idleTimeout",
    "TCPSettings.maxConnectionDuration",
    "TCPSettings.tcpKeepalive",
    "TrafficPolicy.proxyProtocol",
    "TrafficPolicy.retryBudget",
    "TrafficPolicy.tunnel",
    "VirtualServiceSpec.exportTo",
    "VirtualServiceSpec.tcp",
    "VirtualServiceSpec.tls",
    "WorkloadEntrySpec.locality",
    "WorkloadEntrySpec.network",
    "WorkloadEntrySpec.weight",
}


def _unimplemented_fields() -> set[str]:
    seen: set[type[BaseModel]] = set()
    out: set[str] = set()

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get(UNIMPLEMENTED_KEY):
                out.add(f"{model.__name__}.{info.alias or name}")
            for arg in _model_args(info.annotation):
                visit(arg)

    for rtype in RESOURCE_TYPES:
        for arg in _model_args(rtype.model_fields["spec"].annotation):
            visit(arg)
    return out


def test_unimplemented_inventory_is_deliberate() -> None:
    assert _unimplemented_fields() == UNIMPLEMENTED


@pytest.mark.parametrize(
    ("host", "ns", "fqdn"),
    [
        ("reviews", "default", "reviews.default.svc.cluster.local"),
        ("Reviews", "shop", "reviews.shop.svc.cluster.local"),
        ("reviews.default.svc.cluster.local", "other", "reviews.default.svc.cluster.local"),
        ("www.googleapis.com.", "default", "www.googleapis.com"),
        ("*", "default", "*"),
        ("*.example.com", "default", "*.example.com"),
    ],
)
def test_to_fqdn(host: str, ns: str, fqdn: str) -> None:
    assert to_fqdn(host, ns) == fqdn


def test_host_matches_and_external() -> None:
    assert host_matches("*.example.com", "a.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert host_matches("*", "anything")
    assert not host_matches("a.example.com", "b.example.com")
    assert looks_external("www.googleapis.com")
    assert not looks_external("reviews.default.svc.cluster.local")


def test_field_error_rendering() -> None:
    err = FieldError(Source("routes.yaml", 14), "routes[2].burst", "must be > 0", -1, "Plugin default/x")
    assert err.render() == "routes.yaml:14: Plugin default/x: routes[2].burst: must be > 0 (got -1)"
    assert str(FieldError(Source("a.yaml"), "", "boom")) == "a.yaml: boom"
    quoted = FieldError(Source("a.yaml", 1), "p", "bad", 'say "hi"')
    assert quoted.render().endswith('(got "say \\"hi\\"")')
    ist = FieldError(
        Source("r.yaml", 12),
        "spec.x",
        'Referenced subset not found: "v3"',
        None,
        "VirtualService default/reviews",
        Level.ERROR,
        "IST0101",
    )
    assert (
        ist.render()
        == 'Error [IST0101] (VirtualService default/reviews r.yaml:12) Referenced subset not found: "v3"'
    )


def test_validation_collects_by_level_and_empty_in_empty_out() -> None:
    v = Validation()
    assert v.ok and v.messages() == [] and v.render() == ""
    v.add(FieldError(Source("a"), "", "w", level=Level.WARNING))
    v.add(FieldError(Source("a"), "", "i", level=Level.INFO))
    assert v.ok
    v.add(FieldError(Source("a"), "", "e"))
    assert not v.ok
    assert [m.message for m in v.messages()] == ["e", "w", "i"]
    other = Validation()
    other.extend(v)
    assert (len(other.errors), len(other.warnings), len(other.infos)) == (1, 1, 1)


def test_source_line_of_falls_back_to_deepest_known_prefix() -> None:
    src = Source("f.yaml", 3, {("spec",): 5, ("spec", "http"): 7, ("spec", "http", 0): 8})
    assert src.line_of(("spec", "http", 0, "route", 2, "weight")) == 8
    assert src.line_of(("metadata",)) == 3
    assert src == Source("f.yaml", 3) and str(src) == "f.yaml:3"
