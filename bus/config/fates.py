"""The one table of what meshbus does with every kind and every field of the config it accepts.

Each kind, and each field of an enforced kind, has one of three fates:

- ENFORCED: the proxy or meshbus-discovery acts on it as Istio does.
- NOT_ENFORCED: accepted, and every place that meets it warns, in the same words:
  ``<Kind> <ns>/<name>: <field path>: NOT ENFORCED — <what that means for traffic>``.
- REFUSED: refused when it is applied or analysed (proxies could not build it).

A fate may hold only ``when`` a condition on the value or its parent holds (``with mode SIMPLE or
MUTUAL``); otherwise the field is enforced. A fate may differ on a ``standalone`` proxy (one run from
a YAML file, with no discovery and no mesh identity). A NOT_ENFORCED or REFUSED fate on a kind or
on a message field covers everything below it: no further warning is given for the fields inside.

Kinds are named by ``Resource.KEY_KIND`` (``KubernetesGateway`` for the Gateway API's Gateway, which is
not Istio's ``Gateway``). Keys are field paths as users write them, below the kind:
``spec.http[].route[].weight``, with
``[]`` for any list item and ``*`` for any map key. DestinationRule traffic policies are written
once, under ``spec.trafficPolicy``: the same fates hold at ``portLevelSettings[]``, in subsets, and
in subsets' ``portLevelSettings[]`` (proxy/build/cluster_builder.py layers all four the same way); a key
written for one of those places explicitly takes precedence.

tests/unit/config/test_fates.py walks every pydantic model of this package and fails when a field
has no fate, so a new field cannot be accepted silently. Whoever makes the proxy or discovery act on
a field moves it to ENFORCED here, in the same change; ``meshctl analyze --fates`` prints the table.

Used by validation/registry.py (every apply, analyze and rollback), by proxy/bootstrap.py for a
standalone proxy's log, and by proxy/mesh/agent.py for a mesh-mode proxy's log (`ProxyReport`).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from meshbus.bus.config.validation.common import is_jwt_claim_route
from meshbus.bus.config.validation.findings import Findings

if TYPE_CHECKING:
    from meshbus.bus.config.loader import LoadResult
    from meshbus.bus.config.resources import Resource

Path = tuple[str | int, ...]


class Verdict(enum.Enum):
    ENFORCED = "ENFORCED"
    NOT_ENFORCED = "NOT ENFORCED"
    REFUSED = "REFUSED"


@dataclass(frozen=True, slots=True)
class Fate:
    verdict: Verdict
    why: str = ""
    """What the fate means for traffic, in words an operator acts on."""
    when: Callable[[Any, Any], bool] | None = None
    """(value, parent model) -> whether the verdict holds; when it does not, the field is enforced."""
    condition: str = ""
    """``when`` in words, for the listing (``with mode SIMPLE or MUTUAL``)."""
    also_default: bool = False
    """Judge the field's default value too when it is not set."""
    standalone: Fate | None = None
    """The fate on a standalone proxy, where it differs."""

    def holds(self, value: Any, parent: Any) -> bool:
        return self.verdict is not Verdict.ENFORCED and (self.when is None or self.when(value, parent))

    def message(self) -> str:
        return f"{self.verdict.value} — {self.why}"


ENFORCED = Fate(Verdict.ENFORCED)


def not_enforced(
    why: str,
    *,
    when: Callable[[Any, Any], bool] | None = None,
    condition: str = "",
    also_default: bool = False,
) -> Fate:
    return Fate(Verdict.NOT_ENFORCED, why, when, condition, also_default)


def refused(why: str) -> Fate:
    return Fate(Verdict.REFUSED, why)


def enforced_except_standalone(standalone: Fate) -> Fate:
    return Fate(Verdict.ENFORCED, standalone=standalone)


# -- conditions ------------------------------------------------------------------------------------


def _any_gateway(value: Any, _parent: Any) -> bool:
    return any(g != "mesh" for g in value or ())


# Envoy retry policies the config accepts (validation/virtual_service.py) but the exchange never acts on
# (proxy/core/retry.py, proxy/adapters/exchange.py): it has no gRPC, no rate-limit headers and no HTTP/3.
_RETRY_ON_IGNORED = frozenset(
    {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable", "reset-before-request",
     "envoy-ratelimited", "retriable-headers", "http3-post-connect-failure"}
)  # fmt: skip


def _ignored_retry_on(value: Any, _parent: Any) -> bool:
    return any(t.strip() in _RETRY_ON_IGNORED for t in str(value or "").split(","))


# Istio protocols (validation/service_entry.py) meshbus-proxy does not speak; it handles HTTP/1.1.
_NOT_HTTP1 = frozenset(
    {"HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP"}
)


def _not_http1(value: Any, _parent: Any) -> bool:
    return str(value or "").upper() in _NOT_HTTP1


def _routes_on_jwt_claims(value: Any, _parent: Any) -> bool:
    return any(is_jwt_claim_route(name) for name in value or ())


def _external_with_identities(value: Any, spec: Any) -> bool:
    return value == "MESH_EXTERNAL" and any(ep.service_account for ep in spec.endpoints)


_HTTP1_ONLY = "meshbus-proxy speaks HTTP/1.1 only, to clients and upstreams"
_ENVOY = "meshbus runs no Envoy"
_GATEWAY_API = "meshbus has no gateway proxy and does not translate the Gateway API yet"
_NO_LOCALITY = "meshbus has no localities: endpoints are balanced as one group"
_NO_EXPORT_TO = "meshbus sends it to every proxy that needs it, in every namespace"
_GATEWAY = 'meshbus has no gateway proxy yet: routes bound to gateways other than "mesh" are ignored'
_JWT_CLAIM_ROUTES = not_enforced(
    "meshbus-proxy does not route on JWT claims yet: it looks for a request header of that name, so the "
    "match does not see the token's claims",
    when=_routes_on_jwt_claims,
    condition="with a key @request.auth.claims.*",
)
_STRICT_STANDALONE = not_enforced(
    "a standalone proxy has no mesh identity: it cannot require mTLS and accepts plaintext from every caller",
    when=lambda v, _p: v == "STRICT",
    condition="STRICT",
)


_GATEWAY_POLICY = not_enforced(
    "a policy with targetRef(s) is for gateways and waypoints, which meshbus does not have: it applies to "
    "no sidecar; use selector"
)
_SOURCE_FIELDS = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces", "notNamespaces",
    "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
    "trustDomains", "notTrustDomains",
)  # fmt: skip
_OPERATION_FIELDS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
_EXT_AUTHZ_HTTP = "MeshConfig spec.extensionProviders[].envoyExtAuthzHttp"
_EXT_AUTHZ_HTTP_FIELDS = (
    "service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError", "includeRequestHeadersInCheck",
    "includeAdditionalHeadersInCheck", "headersToUpstreamOnAllow", "headersToDownstreamOnDeny",
    "headersToDownstreamOnAllow",
)  # fmt: skip


def _string_match(prefix: str) -> dict[str, Fate]:
    return {f"{prefix}.{k}": ENFORCED for k in ("exact", "prefix", "regex")}


def _header_ops(prefix: str) -> dict[str, Fate]:
    return {
        f"{prefix}.{side}.{op}": ENFORCED
        for side in ("request", "response")
        for op in ("set", "add", "remove")
    }


def _destination(prefix: str) -> dict[str, Fate]:
    return {f"{prefix}.host": ENFORCED, f"{prefix}.subset": ENFORCED, f"{prefix}.port.number": ENFORCED}


def _tcp_or_grpc(value: Any, _parent: Any) -> bool:
    return str(value or "").startswith(("TCP_", "GRPC_"))


_NO_SPANS_STANDALONE = not_enforced(
    "a standalone proxy keeps no spans (it ships them to meshbus-telemetry in mesh mode); trace context "
    "is still propagated with its sampling decision"
)
_TEL = "Telemetry spec"
_TELEMETRY: dict[str, Fate] = {
    # Telemetry (proxy/build/telemetry_policy.py; what each part does: proxy/filters/observe.py)
    f"{_TEL}.selector.matchLabels": ENFORCED,
    f"{_TEL}.targetRef": not_enforced("meshbus has no Gateway API; use selector"),
    f"{_TEL}.targetRefs": not_enforced("meshbus has no Gateway API; use selector"),
    f"{_TEL}.tracing[].match.mode": ENFORCED,
    f"{_TEL}.tracing[].providers[].name": enforced_except_standalone(_NO_SPANS_STANDALONE),
    f"{_TEL}.tracing[].randomSamplingPercentage": ENFORCED,
    f"{_TEL}.tracing[].disableSpanReporting": ENFORCED,
    f"{_TEL}.tracing[].customTags.*.literal.value": enforced_except_standalone(_NO_SPANS_STANDALONE),
    f"{_TEL}.tracing[].customTags.*.environment.name": enforced_except_standalone(_NO_SPANS_STANDALONE),
    f"{_TEL}.tracing[].customTags.*.environment.defaultValue": enforced_except_standalone(
        _NO_SPANS_STANDALONE
    ),
    f"{_TEL}.tracing[].customTags.*.header.name": enforced_except_standalone(_NO_SPANS_STANDALONE),
    f"{_TEL}.tracing[].customTags.*.header.defaultValue": enforced_except_standalone(_NO_SPANS_STANDALONE),
    f"{_TEL}.tracing[].customTags.*.formatter": not_enforced("meshbus adds no formatter tags to spans"),
    f"{_TEL}.tracing[].useRequestIdForTraceSampling": not_enforced(
        "sampling is a random draw per new trace, whatever the request id"
    ),
    f"{_TEL}.tracing[].enableIstioTags": not_enforced("spans always carry meshbus's own tags"),
    f"{_TEL}.tracing[].disableContextPropagation": not_enforced("trace headers are always propagated"),
    f"{_TEL}.metrics[].providers[].name": not_enforced(
        "Istio's metrics always go to meshbus-telemetry's /metrics (the prometheus provider), whatever is named"
    ),
    f"{_TEL}.metrics[].overrides[].match.metric": not_enforced(
        "meshbus-proxy has no TCP or gRPC metrics; the override changes nothing",
        when=_tcp_or_grpc,
        condition="TCP_* or GRPC_*",
    ),
    f"{_TEL}.metrics[].overrides[].match.customMetric": not_enforced(
        "meshbus has no custom metrics; ignored"
    ),
    f"{_TEL}.metrics[].overrides[].match.mode": ENFORCED,
    f"{_TEL}.metrics[].overrides[].disabled": ENFORCED,
    f"{_TEL}.metrics[].overrides[].tagOverrides.*.operation": ENFORCED,
    f"{_TEL}.metrics[].overrides[].tagOverrides.*.value": ENFORCED,
    f"{_TEL}.metrics[].reportingInterval": not_enforced("proxies report every second"),
    f"{_TEL}.accessLogging[].match.mode": ENFORCED,
    f"{_TEL}.accessLogging[].providers[].name": not_enforced(
        "access logs go to meshbus-telemetry's stream (mesh mode) and to --access-log, whatever provider is named"
    ),
    f"{_TEL}.accessLogging[].disabled": ENFORCED,
    f"{_TEL}.accessLogging[].filter.expression": ENFORCED,
}

_MC = "MeshConfig spec"
_MESH_CONFIG: dict[str, Fate] = {
    # MeshConfig's telemetry providers (meshbus-telemetry reads them; proxies read defaultProviders)
    f"{_MC}.extensionProviders[].prometheus": ENFORCED,  # meshbus-telemetry's /metrics, always served
    f"{_MC}.extensionProviders[].opentelemetry.service": ENFORCED,
    f"{_MC}.extensionProviders[].opentelemetry.port": ENFORCED,
    f"{_MC}.extensionProviders[].opentelemetry.http.path": ENFORCED,
    f"{_MC}.extensionProviders[].opentelemetry.http.headers": ENFORCED,
    f"{_MC}.extensionProviders[].opentelemetry.http.timeout": not_enforced(
        "the exporter's own timeout (10 s) is used"
    ),
    f"{_MC}.extensionProviders[].opentelemetry.maxTagLength": not_enforced(
        "span attributes are not truncated"
    ),
    f"{_MC}.extensionProviders[].envoyFileAccessLog": not_enforced(
        "access logs go to meshbus-telemetry's stream and to each proxy's --access-log file, not to this path"
    ),
    f"{_MC}.defaultProviders.metrics": not_enforced(
        "Istio's metrics always go to meshbus-telemetry's /metrics"
    ),
    f"{_MC}.defaultProviders.tracing": ENFORCED,
    f"{_MC}.defaultProviders.accessLogging": not_enforced(
        "access logs go to meshbus-telemetry's stream and to each proxy's --access-log file"
    ),
    f"{_MC}.enableTracing": ENFORCED,
}


# -- the table --------------------------------------------------------------------------------------

KINDS: dict[str, Fate] = {
    "VirtualService": ENFORCED,
    "DestinationRule": ENFORCED,
    "ServiceEntry": ENFORCED,
    "PeerAuthentication": ENFORCED,
    "LocalRateLimit": ENFORCED,
    "Sidecar": enforced_except_standalone(
        not_enforced(
            "a standalone proxy routes to every service in its file; Sidecar scoping is done by "
            "meshbus-discovery in mesh mode"
        )
    ),
    "AuthorizationPolicy": ENFORCED,
    "RequestAuthentication": ENFORCED,
    "RateLimit": enforced_except_standalone(
        not_enforced(
            "a standalone proxy has no meshbus-policy to count with: it applies the failure mode (Open: "
            "every request passes)"
        )
    ),
    "Plugin": ENFORCED,
    "MeshConfig": ENFORCED,
    "Gateway": not_enforced("meshbus has no gateway proxy yet; this Gateway is stored but has no effect"),
    "WorkloadEntry": not_enforced(
        "meshbus adds no WorkloadEntry to any service; workloads join by registering (meshbus-proxy in "
        "mesh mode) or as ServiceEntry endpoints"
    ),
    # Istio kinds meshbus validates (validation/) and stores but does not run.
    "EnvoyFilter": not_enforced(
        f"{_ENVOY}, so Envoy config patches have no effect; use a meshbus.io/v1 Plugin (a filter in the "
        "request path) or a meshbus.io/v1 LocalRateLimit instead"
    ),
    "WasmPlugin": not_enforced(
        f"{_ENVOY} and loads no Wasm modules; write the filter as a meshbus.io/v1 Plugin (a Python "
        "filter in the proxy or a remote one), or use a meshbus.io/v1 LocalRateLimit for rate limits"
    ),
    "Telemetry": ENFORCED,  # proxy/build/telemetry_policy.py, proxy/filters/{stats,tracing,observe}.py
    "WorkloadGroup": not_enforced(
        "meshbus workloads register themselves (meshbus-proxy --mesh), so no WorkloadEntry is created from "
        "this template"
    ),
    "ProxyConfig": not_enforced("a meshbus sidecar takes its settings from its command line"),
    # The Gateway API (gateway.networking.k8s.io).
    "KubernetesGateway": not_enforced(f"the Gateway API's Gateway: {_GATEWAY_API}"),
    "HTTPRoute": not_enforced(f"{_GATEWAY_API}; use a VirtualService"),
    "GRPCRoute": not_enforced(f"{_GATEWAY_API}; use a VirtualService"),
    "TCPRoute": not_enforced(_GATEWAY_API),
    "TLSRoute": not_enforced(_GATEWAY_API),
    "ReferenceGrant": not_enforced(_GATEWAY_API),
}

METADATA: dict[str, Fate] = {
    "metadata.name": ENFORCED,
    "metadata.namespace": ENFORCED,
    "metadata.labels": ENFORCED,
    "metadata.annotations": ENFORCED,
    "metadata.resourceVersion": not_enforced(
        "meshbus does not compare it; `meshctl apply --revision N` refuses a change made meanwhile"
    ),
    "metadata.uid": not_enforced("written by Kubernetes; meshbus ignores it"),
    "metadata.generation": not_enforced("written by Kubernetes; meshbus ignores it"),
    "metadata.creationTimestamp": not_enforced("written by Kubernetes; meshbus records its own"),
}
"""The envelope every kind shares."""

_TP = "DestinationRule spec.trafficPolicy"

FIELDS: dict[str, Fate] = {
    # VirtualService (proxy/build/route_builder.py, proxy/build/outbound_build.py, proxy/core/match.py, proxy/filters/)
    "VirtualService spec.hosts": ENFORCED,
    "VirtualService spec.gateways": not_enforced(_GATEWAY, when=_any_gateway, condition="naming a gateway"),
    "VirtualService spec.http[].name": ENFORCED,
    "VirtualService spec.http[].match[].name": ENFORCED,
    **_string_match("VirtualService spec.http[].match[].uri"),
    **_string_match("VirtualService spec.http[].match[].scheme"),
    **_string_match("VirtualService spec.http[].match[].method"),
    **_string_match("VirtualService spec.http[].match[].authority"),
    "VirtualService spec.http[].match[].headers": _JWT_CLAIM_ROUTES,
    **_string_match("VirtualService spec.http[].match[].headers.*"),
    **_string_match("VirtualService spec.http[].match[].queryParams.*"),
    "VirtualService spec.http[].match[].withoutHeaders": _JWT_CLAIM_ROUTES,
    **_string_match("VirtualService spec.http[].match[].withoutHeaders.*"),
    "VirtualService spec.http[].match[].ignoreUriCase": ENFORCED,
    "VirtualService spec.http[].match[].port": ENFORCED,
    "VirtualService spec.http[].match[].sourceLabels": ENFORCED,
    "VirtualService spec.http[].match[].gateways": not_enforced(
        _GATEWAY, when=_any_gateway, condition="naming a gateway"
    ),
    "VirtualService spec.http[].match[].sourceNamespace": ENFORCED,
    "VirtualService spec.http[].match[].statPrefix": not_enforced(
        "meshbus-proxy keeps no statistics per match block"
    ),
    **_destination("VirtualService spec.http[].route[].destination"),
    "VirtualService spec.http[].route[].weight": ENFORCED,
    **_header_ops("VirtualService spec.http[].route[].headers"),
    "VirtualService spec.http[].redirect.uri": ENFORCED,
    "VirtualService spec.http[].redirect.prefixRewrite": not_enforced(
        "meshbus-proxy does not rewrite the path of a redirect by prefix yet; Location keeps the request's path"
    ),
    "VirtualService spec.http[].redirect.authority": ENFORCED,
    "VirtualService spec.http[].redirect.port": ENFORCED,
    "VirtualService spec.http[].redirect.derivePort": ENFORCED,
    "VirtualService spec.http[].redirect.scheme": ENFORCED,
    "VirtualService spec.http[].redirect.redirectCode": ENFORCED,
    "VirtualService spec.http[].directResponse.status": ENFORCED,
    "VirtualService spec.http[].directResponse.body.string": ENFORCED,
    "VirtualService spec.http[].directResponse.body.bytes": ENFORCED,
    "VirtualService spec.http[].delegate": refused(
        "meshbus does not implement delegate VirtualServices, and no proxy could build a route without a "
        "destination; write the routes in this VirtualService"
    ),
    "VirtualService spec.http[].rewrite.uri": ENFORCED,
    "VirtualService spec.http[].rewrite.authority": ENFORCED,
    "VirtualService spec.http[].rewrite.uriRegexRewrite.match": ENFORCED,
    "VirtualService spec.http[].rewrite.uriRegexRewrite.rewrite": ENFORCED,
    "VirtualService spec.http[].timeout": ENFORCED,
    "VirtualService spec.http[].retries.attempts": ENFORCED,
    "VirtualService spec.http[].retries.perTryTimeout": ENFORCED,
    "VirtualService spec.http[].retries.retryOn": not_enforced(
        "meshbus-proxy retries on 5xx, gateway-error, reset, connect-failure, refused-stream, "
        "retriable-4xx and status codes only; the other policies (gRPC ones, reset-before-request, "
        "envoy-ratelimited, retriable-headers, http3-post-connect-failure) never trigger a retry",
        when=_ignored_retry_on,
        condition="with other policies",
    ),
    "VirtualService spec.http[].retries.retryRemoteLocalities": not_enforced(_NO_LOCALITY),
    "VirtualService spec.http[].retries.retryIgnorePreviousHosts": not_enforced(
        "a retry may go to the endpoint that just failed"
    ),
    "VirtualService spec.http[].retries.backoff.baseInterval": ENFORCED,
    "VirtualService spec.http[].retries.backoff.maxInterval": ENFORCED,
    "VirtualService spec.http[].fault.delay.fixedDelay": ENFORCED,
    "VirtualService spec.http[].fault.delay.percentage.value": ENFORCED,
    "VirtualService spec.http[].fault.delay.percent": ENFORCED,
    "VirtualService spec.http[].fault.delay.exponentialDelay": not_enforced("no delay is injected for it"),
    "VirtualService spec.http[].fault.abort.httpStatus": ENFORCED,
    "VirtualService spec.http[].fault.abort.percentage.value": ENFORCED,
    "VirtualService spec.http[].fault.abort.percent": ENFORCED,
    "VirtualService spec.http[].fault.abort.grpcStatus": not_enforced(
        "meshbus-proxy has no gRPC; no abort is injected for it"
    ),
    "VirtualService spec.http[].fault.abort.http2Error": not_enforced(f"{_HTTP1_ONLY}; no abort is injected"),
    **_destination("VirtualService spec.http[].mirror"),
    **_destination("VirtualService spec.http[].mirrors[].destination"),
    "VirtualService spec.http[].mirrors[].percentage.value": ENFORCED,
    "VirtualService spec.http[].mirrorPercentage.value": ENFORCED,
    "VirtualService spec.http[].mirrorPercent": ENFORCED,
    **_string_match("VirtualService spec.http[].corsPolicy.allowOrigins[]"),
    "VirtualService spec.http[].corsPolicy.allowOrigin": ENFORCED,
    "VirtualService spec.http[].corsPolicy.allowMethods": ENFORCED,
    "VirtualService spec.http[].corsPolicy.allowHeaders": ENFORCED,
    "VirtualService spec.http[].corsPolicy.exposeHeaders": ENFORCED,
    "VirtualService spec.http[].corsPolicy.maxAge": ENFORCED,
    "VirtualService spec.http[].corsPolicy.allowCredentials": ENFORCED,
    "VirtualService spec.http[].corsPolicy.unmatchedPreflights": ENFORCED,
    **_header_ops("VirtualService spec.http[].headers"),
    "VirtualService spec.tls": not_enforced(
        "meshbus-proxy has no TLS (SNI) routing yet; these routes are ignored"
    ),
    "VirtualService spec.tcp": not_enforced("meshbus-proxy proxies HTTP only; TCP routes are ignored"),
    "VirtualService spec.exportTo": not_enforced(_NO_EXPORT_TO),
    # DestinationRule (proxy/build/cluster_builder.py, proxy/core/breaker.py, proxy/core/outlier.py, proxy/tls/policy.py)
    "DestinationRule spec.host": ENFORCED,
    f"{_TP}.loadBalancer.simple": not_enforced(
        "PASSTHROUGH needs the original destination address, which meshbus-proxy does not see; "
        "LEAST_REQUEST is used",
        when=lambda v, _p: v == "PASSTHROUGH",
        condition="PASSTHROUGH",
    ),
    f"{_TP}.loadBalancer.consistentHash.httpHeaderName": ENFORCED,
    f"{_TP}.loadBalancer.consistentHash.httpCookie.name": ENFORCED,
    f"{_TP}.loadBalancer.consistentHash.httpCookie.path": not_enforced(
        "meshbus-proxy never sets the cookie; it hashes the cookie a request brings"
    ),
    f"{_TP}.loadBalancer.consistentHash.httpCookie.ttl": not_enforced(
        "meshbus-proxy never sets the cookie; requests without it are spread at random"
    ),
    f"{_TP}.loadBalancer.consistentHash.httpCookie.attributes": not_enforced(
        "meshbus-proxy never sets the cookie; it hashes the cookie a request brings"
    ),
    f"{_TP}.loadBalancer.consistentHash.useSourceIp": ENFORCED,
    f"{_TP}.loadBalancer.consistentHash.httpQueryParameterName": ENFORCED,
    f"{_TP}.loadBalancer.consistentHash.ringHash.minimumRingSize": ENFORCED,
    f"{_TP}.loadBalancer.consistentHash.maglev": not_enforced("a ring hash is used instead"),
    f"{_TP}.loadBalancer.consistentHash.minimumRingSize": ENFORCED,
    f"{_TP}.loadBalancer.localityLbSetting": not_enforced(_NO_LOCALITY),
    f"{_TP}.loadBalancer.warmupDurationSecs": not_enforced("new endpoints get their full share at once"),
    f"{_TP}.loadBalancer.warmup": not_enforced("new endpoints get their full share at once"),
    f"{_TP}.connectionPool.tcp.maxConnections": ENFORCED,
    f"{_TP}.connectionPool.tcp.connectTimeout": ENFORCED,
    f"{_TP}.connectionPool.tcp.tcpKeepalive": not_enforced("upstream sockets use the system's keepalive"),
    f"{_TP}.connectionPool.tcp.maxConnectionDuration": not_enforced(
        "upstream connections are not closed for their age"
    ),
    f"{_TP}.connectionPool.tcp.idleTimeout": not_enforced(
        "use connectionPool.http.idleTimeout, which meshbus-proxy applies"
    ),
    f"{_TP}.connectionPool.http.http1MaxPendingRequests": ENFORCED,
    f"{_TP}.connectionPool.http.http2MaxRequests": ENFORCED,
    f"{_TP}.connectionPool.http.maxRequestsPerConnection": ENFORCED,
    f"{_TP}.connectionPool.http.maxRetries": ENFORCED,  # the cluster's retry budget (core/attempts.py)
    f"{_TP}.connectionPool.http.idleTimeout": ENFORCED,
    f"{_TP}.connectionPool.http.h2UpgradePolicy": not_enforced(
        _HTTP1_ONLY, when=lambda v, _p: v == "UPGRADE", condition="UPGRADE"
    ),
    f"{_TP}.connectionPool.http.useClientProtocol": not_enforced(_HTTP1_ONLY),
    f"{_TP}.connectionPool.http.maxConcurrentStreams": not_enforced(_HTTP1_ONLY),
    f"{_TP}.connectionPool.http.http2KeepAlive": not_enforced(f"{_HTTP1_ONLY}: it sends no HTTP/2 pings"),
    f"{_TP}.outlierDetection.consecutive5xxErrors": ENFORCED,
    f"{_TP}.outlierDetection.consecutiveGatewayErrors": ENFORCED,
    f"{_TP}.outlierDetection.interval": ENFORCED,
    f"{_TP}.outlierDetection.baseEjectionTime": ENFORCED,
    f"{_TP}.outlierDetection.maxEjectionPercent": ENFORCED,
    f"{_TP}.outlierDetection.minHealthPercent": ENFORCED,
    f"{_TP}.outlierDetection.splitExternalLocalOriginErrors": not_enforced(
        "connect failures, resets and timeouts count as 5xx responses"
    ),
    f"{_TP}.outlierDetection.consecutiveLocalOriginFailures": not_enforced(
        "connect failures, resets and timeouts count as 5xx responses"
    ),
    f"{_TP}.outlierDetection.outlierDetectionHttpErrorCodes": not_enforced(
        "5xx responses are the errors that count"
    ),
    f"{_TP}.outlierDetection.consecutiveErrors": ENFORCED,
    f"{_TP}.tls.mode": ENFORCED,
    f"{_TP}.tls.clientCertificate": ENFORCED,
    f"{_TP}.tls.privateKey": ENFORCED,
    f"{_TP}.tls.caCertificates": ENFORCED,
    f"{_TP}.tls.credentialName": not_enforced(
        "meshbus has no secret store: the certificates it names are not loaded (use clientCertificate, "
        "privateKey and caCertificates files)"
    ),
    f"{_TP}.tls.subjectAltNames": not_enforced(
        "the server certificate is checked against the SNI name (sni, else the host) instead",
        when=lambda _v, tls: tls.mode in ("SIMPLE", "MUTUAL"),
        condition="with mode SIMPLE or MUTUAL",
    ),
    f"{_TP}.tls.sni": ENFORCED,
    f"{_TP}.tls.insecureSkipVerify": ENFORCED,
    f"{_TP}.tls.caCrl": not_enforced(
        "meshbus-proxy does not check revocation lists: revoked server certificates are still accepted"
    ),
    f"{_TP}.portLevelSettings[].port.number": ENFORCED,
    f"{_TP}.tunnel": not_enforced("meshbus-proxy does not tunnel; requests go to the endpoints directly"),
    f"{_TP}.proxyProtocol": not_enforced("meshbus-proxy sends no PROXY protocol header"),
    f"{_TP}.retryBudget": not_enforced("retries are limited only by each route's attempts"),
    "DestinationRule spec.subsets[].name": ENFORCED,
    "DestinationRule spec.subsets[].labels": ENFORCED,
    "DestinationRule spec.exportTo": not_enforced(_NO_EXPORT_TO),
    "DestinationRule spec.workloadSelector": not_enforced(
        "the rule applies on every proxy that calls its host"
    ),
    # ServiceEntry (proxy/build/cluster_builder.py, proxy/tls/policy.py)
    "ServiceEntry spec.hosts": ENFORCED,
    "ServiceEntry spec.addresses": not_enforced(
        "meshbus-proxy routes by host name; calls to these addresses are not routed"
    ),
    "ServiceEntry spec.ports[].number": ENFORCED,
    "ServiceEntry spec.ports[].protocol": not_enforced(
        f"{_HTTP1_ONLY}; traffic to this port is handled as HTTP/1.1",
        when=_not_http1,
        condition="other than HTTP",
    ),
    "ServiceEntry spec.ports[].name": ENFORCED,
    "ServiceEntry spec.ports[].targetPort": ENFORCED,
    "ServiceEntry spec.location": not_enforced(
        "meshbus-proxy sends mTLS to every endpoint that names a serviceAccount, even in a MESH_EXTERNAL service",
        when=_external_with_identities,
        condition="MESH_EXTERNAL with serviceAccounts",
    ),
    "ServiceEntry spec.resolution": not_enforced(
        "meshbus-proxy cannot pass traffic through to the original destination: every proxy that receives "
        "this ServiceEntry refuses its config; use STATIC with endpoints, or DNS",
        when=lambda v, _p: v == "NONE",
        condition="NONE, the default",
        also_default=True,
    ),
    "ServiceEntry spec.endpoints[].address": ENFORCED,
    "ServiceEntry spec.endpoints[].ports": ENFORCED,
    "ServiceEntry spec.endpoints[].labels": ENFORCED,
    "ServiceEntry spec.endpoints[].network": not_enforced(
        "meshbus has one network: the endpoint is dialled directly"
    ),
    "ServiceEntry spec.endpoints[].locality": not_enforced(_NO_LOCALITY),
    "ServiceEntry spec.endpoints[].weight": not_enforced("endpoints get equal shares"),
    "ServiceEntry spec.endpoints[].serviceAccount": ENFORCED,
    "ServiceEntry spec.workloadSelector": not_enforced(
        "meshbus adds no workloads to a service by labels; list endpoints, or let workloads register"
    ),
    "ServiceEntry spec.exportTo": not_enforced(_NO_EXPORT_TO),
    "ServiceEntry spec.subjectAltNames": not_enforced(
        "meshbus-proxy expects the endpoints' service accounts (without any: any workload of the trust domain)"
    ),
    # Sidecar (control/discovery/visibility.py, control/discovery/model.py)
    "Sidecar spec.workloadSelector.labels": ENFORCED,
    "Sidecar spec.ingress": not_enforced(
        "meshbus-proxy's inbound listener comes from its command line, not from Sidecar ingress"
    ),
    "Sidecar spec.egress[].port": not_enforced("egress hosts apply on every port"),
    "Sidecar spec.egress[].bind": not_enforced(
        "meshbus-proxy's outbound listener comes from its command line"
    ),
    "Sidecar spec.egress[].captureMode": not_enforced("meshbus-proxy captures no traffic; apps call it"),
    "Sidecar spec.egress[].hosts": ENFORCED,
    "Sidecar spec.inboundConnectionPool": not_enforced("the inbound side has no connection limits"),
    "Sidecar spec.outboundTrafficPolicy.mode": not_enforced(
        "meshbus-proxy never passes traffic through to hosts it does not know (as REGISTRY_ONLY)",
        when=lambda v, _p: v == "ALLOW_ANY",
        condition="ALLOW_ANY",
    ),
    "Sidecar spec.outboundTrafficPolicy.egressProxy": not_enforced(
        "traffic to unknown hosts is not sent anywhere"
    ),
    # PeerAuthentication (proxy/tls/policy.py, proxy/tls/mtls.py; mTLS needs mesh mode)
    "PeerAuthentication spec.selector.matchLabels": ENFORCED,
    "PeerAuthentication spec.mtls.mode": enforced_except_standalone(_STRICT_STANDALONE),
    "PeerAuthentication spec.portLevelMtls.*.mode": enforced_except_standalone(_STRICT_STANDALONE),
    # LocalRateLimit (proxy/build/route_builder.py, proxy/filters/ratelimit.py; discovery sends one without hosts by its selector)
    "LocalRateLimit spec.workloadSelector": Fate(
        Verdict.NOT_ENFORCED,
        "a LocalRateLimit with hosts reaches every proxy that calls them, whatever its workloadSelector",
        when=lambda _v, spec: bool(spec.hosts),
        condition="with hosts",
        standalone=not_enforced("a standalone proxy applies every LocalRateLimit in its file"),
    ),
    "LocalRateLimit spec.workloadSelector.labels": ENFORCED,
    "LocalRateLimit spec.hosts": ENFORCED,
    "LocalRateLimit spec.routes": ENFORCED,
    "LocalRateLimit spec.tokenBucket.maxTokens": ENFORCED,
    "LocalRateLimit spec.tokenBucket.tokensPerFill": ENFORCED,
    "LocalRateLimit spec.tokenBucket.fillInterval": ENFORCED,
    # Plugin (proxy/filters/plugins/: selection, chain order, failure policy; control/config/filters.py
    # checks filter and pluginConfig when applied)
    "Plugin spec.selector.matchLabels": ENFORCED,
    "Plugin spec.filter": ENFORCED,
    "Plugin spec.placement": ENFORCED,
    "Plugin spec.phase": ENFORCED,
    "Plugin spec.priority": ENFORCED,
    "Plugin spec.failStrategy": ENFORCED,
    "Plugin spec.match[].mode": ENFORCED,
    "Plugin spec.match[].ports[].number": ENFORCED,
    "Plugin spec.pluginConfig": ENFORCED,
    "Plugin spec.timeout": ENFORCED,
    # AuthorizationPolicy (bus/config/authz, proxy/filters/authz.py: the server sidecar's AUTHZ filter)
    "AuthorizationPolicy spec.selector.matchLabels": ENFORCED,
    "AuthorizationPolicy spec.targetRef": _GATEWAY_POLICY,
    "AuthorizationPolicy spec.targetRefs": _GATEWAY_POLICY,
    "AuthorizationPolicy spec.action": ENFORCED,
    "AuthorizationPolicy spec.provider.name": ENFORCED,
    **{f"AuthorizationPolicy spec.rules[].from[].source.{f}": ENFORCED for f in _SOURCE_FIELDS},
    **{f"AuthorizationPolicy spec.rules[].to[].operation.{f}": ENFORCED for f in _OPERATION_FIELDS},
    "AuthorizationPolicy spec.rules[].when[].key": not_enforced(
        "meshbus cannot read Envoy filter metadata: in an ALLOW rule this condition never holds (the rule "
        "allows nothing); a DENY, AUDIT or CUSTOM rule is applied without it, so it matches more requests "
        "(fails closed)",
        when=lambda v, _p: str(v).startswith("experimental.envoy.filters."),
        condition="experimental.envoy.filters.*",
    ),
    "AuthorizationPolicy spec.rules[].when[].values": ENFORCED,
    "AuthorizationPolicy spec.rules[].when[].notValues": ENFORCED,
    # MeshConfig (bus/config/authz/compile.py reads it for the proxies; control/discovery/model.py the root
    # namespace of every kind)
    "MeshConfig spec.rootNamespace": ENFORCED,
    "MeshConfig spec.trustDomain": not_enforced(
        "meshbus-ca and the sidecars take the trust domain from their command line (--trust-domain)"
    ),
    "MeshConfig spec.pathNormalization.normalization": ENFORCED,
    "MeshConfig spec.defaultConfig.gatewayTopology.numTrustedProxies": ENFORCED,
    "MeshConfig spec.extensionProviders[].name": ENFORCED,
    **{f"{_EXT_AUTHZ_HTTP}.{f}": ENFORCED for f in _EXT_AUTHZ_HTTP_FIELDS},
    f"{_EXT_AUTHZ_HTTP}.clearRouteCache": not_enforced(
        "meshbus-proxy picks the route before authorization and does not pick it again after a check"
    ),
    f"{_EXT_AUTHZ_HTTP}.includeRequestBodyInCheck.maxRequestBytes": not_enforced(
        "meshbus-proxy holds at most 64 KiB of a body for a check: a larger body counts as over the limit "
        "(413, or sent in part with allowPartialMessage)",
        when=lambda v, _p: int(v or 0) > 65536,
        condition="over 65536",
    ),
    f"{_EXT_AUTHZ_HTTP}.includeRequestBodyInCheck.allowPartialMessage": ENFORCED,
    f"{_EXT_AUTHZ_HTTP}.includeRequestBodyInCheck.packAsBytes": ENFORCED,
    "MeshConfig spec.extensionProviders[].envoyExtAuthzGrpc": not_enforced(
        "meshbus-proxy cannot call gRPC authorizers: CUSTOM policies naming this provider deny the requests "
        "they match"
    ),
    "MeshConfig spec.extensionProviders[].meshbusAuthz": ENFORCED,
    "MeshConfig spec.extensionProviders[].meshbusAuthz.subject": ENFORCED,
    "MeshConfig spec.extensionProviders[].meshbusAuthz.timeout": ENFORCED,
    "MeshConfig spec.extensionProviders[].meshbusAuthz.failOpen": ENFORCED,
    "MeshConfig spec.extensionProviders[].meshbusAuthz.statusOnError": ENFORCED,
    # RequestAuthentication (proxy/filters/jwt_authn.py in the inbound sidecar; keys fetched by
    # meshbus-policy, control/policy/jwks.py, and sent inline by discovery, control/discovery/jwks_inline.py)
    "RequestAuthentication spec.targetRef": not_enforced("meshbus has no Gateway API; use selector"),
    "RequestAuthentication spec.targetRefs": not_enforced("meshbus has no Gateway API; use selector"),
    "RequestAuthentication spec.selector.matchLabels": ENFORCED,
    "RequestAuthentication spec.jwtRules[].issuer": ENFORCED,
    "RequestAuthentication spec.jwtRules[].audiences": ENFORCED,
    "RequestAuthentication spec.jwtRules[].jwksUri": enforced_except_standalone(
        not_enforced(
            "a standalone proxy fetches no keys (meshbus-policy does, in mesh mode): tokens of this issuer "
            "get 401; give the keys inline in jwks",
        )
    ),
    "RequestAuthentication spec.jwtRules[].jwks": ENFORCED,
    "RequestAuthentication spec.jwtRules[].fromHeaders[].name": ENFORCED,
    "RequestAuthentication spec.jwtRules[].fromHeaders[].prefix": ENFORCED,
    "RequestAuthentication spec.jwtRules[].fromParams": ENFORCED,
    "RequestAuthentication spec.jwtRules[].fromCookies": ENFORCED,
    "RequestAuthentication spec.jwtRules[].outputPayloadToHeader": ENFORCED,
    "RequestAuthentication spec.jwtRules[].forwardOriginalToken": ENFORCED,
    "RequestAuthentication spec.jwtRules[].outputClaimToHeaders[].header": ENFORCED,
    "RequestAuthentication spec.jwtRules[].outputClaimToHeaders[].claim": ENFORCED,
    "RequestAuthentication spec.jwtRules[].timeout": ENFORCED,
    "RequestAuthentication spec.jwtRules[].spaceDelimitedClaims": ENFORCED,
    "RequestAuthentication spec.jwtRules[].presence": not_enforced(
        "meshbus treats every token as optional: a request without one passes without identity; require "
        "one with an AuthorizationPolicy whose rule names requestPrincipals",
        when=lambda v, _p: v == "REQUIRED",
        condition="REQUIRED",
    ),
    # RateLimit (proxy/filters/global_ratelimit.py in the inbound sidecar, counters in meshbus-policy)
    "RateLimit spec.selector.matchLabels": ENFORCED,
    "RateLimit spec.rules[].name": ENFORCED,
    "RateLimit spec.rules[].clientSelectors[].headers[].name": ENFORCED,
    "RateLimit spec.rules[].clientSelectors[].headers[].type": ENFORCED,
    "RateLimit spec.rules[].clientSelectors[].headers[].value": ENFORCED,
    "RateLimit spec.rules[].clientSelectors[].headers[].invert": ENFORCED,
    "RateLimit spec.rules[].clientSelectors[].sourceCIDR.type": ENFORCED,
    "RateLimit spec.rules[].clientSelectors[].sourceCIDR.value": ENFORCED,
    "RateLimit spec.rules[].limit.requests": ENFORCED,
    "RateLimit spec.rules[].limit.unit": ENFORCED,
    "RateLimit spec.rules[].shadowMode": ENFORCED,
    "RateLimit spec.failureMode": ENFORCED,
    "RateLimit spec.timeout": ENFORCED,
    **_TELEMETRY,
    **_MESH_CONFIG,
}

SAME_AS: dict[str, str] = {
    "DestinationRule spec.trafficPolicy.portLevelSettings[]": _TP,
    "DestinationRule spec.subsets[].trafficPolicy": _TP,
    "DestinationRule spec.subsets[].trafficPolicy.portLevelSettings[]": _TP,
}
"""Places that take the fates written for another (variant prefix -> the prefix the table uses)."""


def _expand() -> dict[str, Fate]:
    out = dict(FIELDS)
    for variant, canonical in SAME_AS.items():
        for key, fate in FIELDS.items():
            if key.startswith(canonical + "."):
                out.setdefault(variant + key[len(canonical) :], fate)
    for key, fate in METADATA.items():
        for kind in KINDS:
            out[f"{kind} {key}"] = fate
    return out


RESOLVED: Mapping[str, Fate] = _expand()
"""Every key the walk looks up: FIELDS, their SAME_AS variants, and METADATA under every kind."""


# -- checking resources -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    path: Path
    """Below the document root; ``()`` for the kind as a whole."""
    fate: Fate
    value: object = None
    """Shown as ``(got ...)`` when the fate depends on it and it is one scalar."""


_UNDECIDED = not_enforced(
    "meshbus has not decided what it does with this (a bug: bus/config/fates.py lacks it)"
)


def _effective(fate: Fate, standalone: bool) -> Fate:
    return fate.standalone if standalone and fate.standalone is not None else fate


def findings(resource: Resource, *, standalone: bool = False) -> Iterator[Finding]:
    """The kind, or every field of ``resource``, whose fate is NOT_ENFORCED or REFUSED as written."""
    kind = resource.KEY_KIND
    kind_fate = _effective(KINDS.get(kind, _UNDECIDED), standalone)
    if kind_fate.holds(None, resource):
        yield Finding((), kind_fate)
        return
    yield from _walk(resource.metadata, kind, ("metadata",), "metadata", standalone)
    yield from _walk(resource.spec, kind, ("spec",), "spec", standalone)


def _walk(model: BaseModel, kind: str, path: Path, pattern: str, standalone: bool) -> Iterator[Finding]:
    fields_set = model.model_fields_set
    for name, alias, sub_pattern, fate, descend in _plan(kind, type(model), pattern):
        is_set = name in fields_set
        if not is_set and (fate is None or not fate.also_default):
            continue
        value = getattr(model, name)
        if fate is not None:
            fate = _effective(fate, standalone)
            if fate.holds(value, model):
                shown = value if fate.when is not None and isinstance(value, str | int) else None
                yield Finding((*path, alias), fate, shown)
                continue
        if is_set and descend:
            yield from _walk_value(value, kind, (*path, alias), sub_pattern, standalone)


@functools.cache
def _plan(
    kind: str, model: type[BaseModel], pattern: str
) -> tuple[tuple[str, str, str, Fate | None, bool], ...]:
    """Per field of ``model`` at ``pattern``, in declaration order (stable messages): attribute name,
    YAML name, its pattern, its fate (None: a message field without one), whether to walk into it."""
    out = []
    for name, info in model.model_fields.items():
        alias = info.alias or name
        sub_pattern = f"{pattern}.{alias}"
        descend = _holds_messages(info.annotation)
        fate = RESOLVED.get(f"{kind} {sub_pattern}")
        out.append((name, alias, sub_pattern, _UNDECIDED if fate is None and not descend else fate, descend))
    return tuple(out)


def _walk_value(value: Any, kind: str, path: Path, pattern: str, standalone: bool) -> Iterator[Finding]:
    if isinstance(value, BaseModel):
        yield from _walk(value, kind, path, pattern, standalone)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _walk_value(item, kind, (*path, i), f"{pattern}[]", standalone)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_value(item, kind, (*path, key), f"{pattern}.*", standalone)


def _holds_messages(annotation: Any) -> bool:
    """Whether a field's type holds config messages (a model, or a list or map of them): then its
    fields have fates of their own, and the field itself needs none."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    return any(_holds_messages(arg) for arg in getattr(annotation, "__args__", ()) or ())


def check(
    resource: Resource, f: Findings, *, standalone: bool = False, only_standalone: bool = False
) -> None:
    """Add the fates of ``resource`` to ``f``: a warning per NOT_ENFORCED item, an error per REFUSED one.

    ``only_standalone``: just the items whose fate differs on a standalone proxy.
    """
    for item in findings(resource, standalone=standalone):
        if only_standalone and id(item.fate) not in _STANDALONE_FATES:
            continue
        if item.fate.verdict is Verdict.REFUSED:
            f.error(item.path, item.fate.message(), item.value)
        else:
            f.warn(item.path, item.fate.message(), item.value)


_STANDALONE_FATES = {
    id(fate.standalone) for fate in (*KINDS.values(), *FIELDS.values()) if fate.standalone is not None
}


def _rendered(resource: Resource, **kw: bool) -> list[str]:
    f = Findings(resource)
    check(resource, f, **kw)
    return [m.render() for m in f.validation.messages()]


def standalone_warnings(result: LoadResult) -> list[str]:
    """What a standalone proxy logs for a loaded file: the load's warnings, and the fates that differ
    on a proxy without discovery or mesh identity (a Sidecar, a STRICT PeerAuthentication)."""
    out = [w.render() for w in result.validation.warnings]
    for res in result.resources:
        out.extend(_rendered(res, standalone=True, only_standalone=True))
    return out


class ProxyReport:
    """What a mesh-mode proxy logs about the snapshots it applies: each resource's NOT_ENFORCED and
    REFUSED items once, when the resource first appears or changes (never per request).

    A snapshot's unchanged resources are the very objects of the last one (the proxy's resource
    cache reuses them), so they cost an identity check each; only new objects are compared and walked.
    """

    def __init__(self) -> None:
        self._objects: dict[int, Resource] = {}  # id -> resource of the last snapshot (kept alive)
        self._told: dict[tuple[str, str, str], Resource] = {}  # key -> the content last told about

    def new_lines(self, resources: Iterable[Resource]) -> list[str]:
        out: list[str] = []
        objects: dict[int, Resource] = {}
        old = self._objects
        for res in resources:
            objects[id(res)] = res
            if id(res) in old:
                continue
            key = res.key
            told = self._told.get(key)
            if told is None or told != res:
                out.extend(_rendered(res))
            self._told[key] = res
        for ident, res in old.items():
            if ident not in objects and self._told.get(res.key) is res:
                del self._told[res.key]  # gone: told again if it comes back
        self._objects = objects
        return out


# -- the listing ------------------------------------------------------------------------------------


def listing(verdicts: Iterable[Verdict] = (Verdict.NOT_ENFORCED, Verdict.REFUSED)) -> list[str]:
    """The table as lines (``meshctl analyze --fates``): kinds, the envelope, then fields."""
    wanted = set(verdicts)
    out: list[str] = []
    for kind, fate in KINDS.items():
        out.extend(_lines(kind, fate, wanted))
    for key, fate in METADATA.items():
        out.extend(_lines(f"(every kind) {key}", fate, wanted))
    for key, fate in FIELDS.items():
        out.extend(_lines(key, fate, wanted))
    out.append(
        f"({_TP} fields: the same in portLevelSettings[], in subsets[].trafficPolicy and in their "
        "portLevelSettings[])"
    )
    return out


def _lines(what: str, fate: Fate, wanted: set[Verdict]) -> list[str]:
    out = []
    if fate.verdict in wanted:
        cond = f" ({fate.condition})" if fate.condition else ""
        out.append(f"{what}{cond}: {fate.message() if fate.why else fate.verdict.value}")
    alone = fate.standalone
    if alone is not None and alone.verdict in wanted:
        cond = f", {alone.condition}" if alone.condition else ""
        out.append(f"{what} (on a standalone proxy{cond}): {alone.message()}")
    return out
