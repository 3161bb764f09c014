"""Semantic rules, one case per rule: each invalid snippet yields exactly the named error."""

from __future__ import annotations

import pytest

from tests.unit.config.config_helpers import errors, load_spec, warnings

pytestmark = pytest.mark.unit

ROUTE = "- route: [{destination: {host: r}}]\n"


def vs(http: str, hosts: str = "[r]") -> str:
    return f"hosts: {hosts}\nhttp:\n{http}"


CASES = [
    # --- VirtualService
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}, weight: 0}, {destination: {host: r}, weight: 0}]\n"),
        "spec.http[0].route: total destination weight = 0",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}, {destination: {host: r}}]\n"),
        "spec.http[0].route: total destination weight = 0",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}, weight: 120}, {destination: {host: r}, weight: -20}]\n"),
        "spec.http[0].route[1].weight: weight must not be negative (got -20)",
    ),
    (
        "VirtualService",
        vs("- match: [{uri: {regex: '[a-'}}]\n  route: [{destination: {host: r}}]\n"),
        "spec.http[0].match[0].uri.regex: invalid regular expression",
    ),
    (
        "VirtualService",
        vs("- match: [{uri: {regex: '(?=a)b'}}]\n  route: [{destination: {host: r}}]\n"),
        "lookaround and backreferences are not supported (RE2 syntax)",
    ),
    (
        "VirtualService",
        vs("- match: [{headers: {'End User': {exact: a}}}]\n  route: [{destination: {host: r}}]\n"),
        'spec.http[0].match[0].headers.End User: not a valid header name (got "End User")',
    ),
    (
        "VirtualService",
        vs("- match: [{uri: {}}]\n  route: [{destination: {host: r}}]\n"),
        "spec.http[0].match[0].uri: set one of exact, prefix, regex",
    ),
    (
        "VirtualService",
        vs("- match: [{queryParams: {a: {prefix: x}}}]\n  route: [{destination: {host: r}}]\n"),
        "query parameters support exact and regex only",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  retries: {attempts: -1}\n"),
        "spec.http[0].retries.attempts: attempts must be >= 0 (got -1)",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  retries: {attempts: 1, perTryTimeout: 0.5ms}\n"),
        'spec.http[0].retries.perTryTimeout: duration must be at least 1ms (got "0.5ms")',
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  retries: {attempts: 1, retryOn: '5xx,oops'}\n"),
        'unknown retry policy "oops"',
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  retries: {attempts: 1, retryOn: '5xx,999'}\n"),
        '"999" is not an HTTP status code',
    ),
    (
        "VirtualService",
        vs(
            "- route: [{destination: {host: r}}]\n  fault: {abort: {httpStatus: 600, percentage: {value: 1}}}\n"
        ),
        "spec.http[0].fault.abort.httpStatus: httpStatus must be in 200..599 (got 600)",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  fault: {abort: {percentage: {value: 1}}}\n"),
        "spec.http[0].fault.abort.httpStatus: abort needs httpStatus",
    ),
    (
        "VirtualService",
        vs(
            "- route: [{destination: {host: r}}]\n  fault: {delay: {fixedDelay: 1s, percentage: {value: 101}}}\n"
        ),
        "spec.http[0].fault.delay.percentage.value: must be <= 100.0 (got 101)",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  fault: {}\n"),
        "spec.http[0].fault: fault needs delay or abort",
    ),
    (
        "VirtualService",
        vs("- redirect: {uri: /a}\n  rewrite: {uri: /b}\n"),
        "spec.http[0].rewrite: rewrite cannot be combined with redirect",
    ),
    (
        "VirtualService",
        vs("- redirect: {uri: /a, prefixRewrite: /b}\n"),
        "spec.http[0].redirect: set only one of uri and prefixRewrite",
    ),
    (
        "VirtualService",
        vs("- redirect: {uri: /a, redirectCode: 200}\n"),
        "spec.http[0].redirect.redirectCode: must be one of 301, 302, 303, 307, 308 (got 200)",
    ),
    (
        "VirtualService",
        vs("- redirect: {uri: /a}\n  route: [{destination: {host: r}}]\n"),
        "a route does one of route, redirect, directResponse, delegate (got route, redirect)",
    ),
    (
        "VirtualService",
        vs("- directResponse: {status: 700}\n"),
        "spec.http[0].directResponse.status: must be an HTTP status in 200..599 (got 700)",
    ),
    (
        "VirtualService",
        vs(
            "- name: x\n  match: [{uri: {exact: /}}]\n  redirect: {uri: /a}\n- name: x\n"
            + "  route: [{destination: {host: r}}]\n"
        ),
        'spec.http[1].name: duplicate route name (also used by http[0]) (got "x")',
    ),
    ("VirtualService", vs(ROUTE, hosts='["bad_host"]'), "spec.hosts[0]: host must be a DNS name"),
    (
        "VirtualService",
        vs(ROUTE, hosts='["*"]'),
        'wildcard host "*" is not allowed for VirtualServices bound to the mesh',
    ),
    ("VirtualService", vs(ROUTE, hosts="[r, r]"), 'spec.hosts[1]: duplicate host (got "r")'),
    ("VirtualService", "hosts: [r]\n", "spec: at least one of http, tcp or tls routes is required"),
    (
        "VirtualService",
        vs("- route: [{destination: {host: '*.r.com'}}]\n"),
        "destination.host: wildcard host is not allowed here",
    ),
    (
        "VirtualService",
        vs(
            "- route: [{destination: {host: r}}]\n  mirror: {host: r}\n  mirrors: [{destination: {host: r}}]\n"
        ),
        "set only one of mirror and mirrors",
    ),
    (
        "VirtualService",
        vs("- route: [{destination: {host: r}}]\n  headers: {response: {set: {host: x}}}\n"),
        "cannot set or remove the Host header here",
    ),
    # --- DestinationRule
    (
        "DestinationRule",
        "host: r\nsubsets: [{name: v1}, {name: v1}]\n",
        'spec.subsets[1].name: duplicate subset name (also subsets[0]) (got "v1")',
    ),
    ("DestinationRule", "host: r\nsubsets: [{name: v1, labels: {'ver sion': v1}}]\n", "invalid label key"),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {loadBalancer: {consistentHash: {}}}\n",
        "set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName (got none)",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}\n",
        "set only one of simple and consistentHash",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL, caCertificates: /x}}\n",
        "spec.trafficPolicy.tls.caCertificates: caCertificates cannot be set with mode ISTIO_MUTUAL",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {tls: {mode: MUTUAL, privateKey: /k}}\n",
        "spec.trafficPolicy.tls.clientCertificate: clientCertificate is required with mode MUTUAL",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}\n",
        "maxEjectionPercent: must be between 0 and 100 (got 101)",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: -1}}\n",
        "consecutive5xxErrors: must be >= 0 (got -1)",
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {outlierDetection: {baseEjectionTime: 0s}}\n",
        'baseEjectionTime: duration must be at least 1ms (got "0s")',
    ),
    (
        "DestinationRule",
        "host: r\ntrafficPolicy: {portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]}\n",
        "spec.trafficPolicy.portLevelSettings[1].port.number: duplicate port in portLevelSettings (got 80)",
    ),
    # --- ServiceEntry
    (
        "ServiceEntry",
        "ports: [{number: 80, name: http}]\nresolution: DNS\n",
        "spec.hosts: at least one host is required",
    ),
    (
        "ServiceEntry",
        "hosts: [a.com]\nports: [{number: 80}]\nresolution: DNS\n",
        "spec.ports[0].name: invalid port name",
    ),
    (
        "ServiceEntry",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS_ROUND_ROBIN\n"
        "endpoints: [{address: a.com}, {address: b.com}]\n",
        "spec.endpoints: DNS_ROUND_ROBIN mode cannot have multiple endpoints",
    ),
    (
        "ServiceEntry",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: a.com}]\n",
        "endpoint address is not a valid IP address",
    ),
    (
        "ServiceEntry",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\n"
        "endpoints: [{address: 10.0.0.1, ports: {grpc: 9000}}]\n",
        "spec.endpoints[0].ports.grpc: endpoint port is not defined by the service entry (declared: http)",
    ),
    (
        "ServiceEntry",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: NONE\nendpoints: [{address: 10.0.0.1}]\n",
        "NONE mode cannot set endpoints",
    ),
    (
        "ServiceEntry",
        "hosts: ['*.a.com']\nports: [{number: 80, name: http}]\nresolution: DNS\n",
        "hosts must be FQDN if no endpoints are provided for resolution mode DNS",
    ),
    # --- Security
    (
        "PeerAuthentication",
        "portLevelMtls: {'8080': {mode: STRICT}}\n",
        "portLevelMtls requires a selector with labels",
    ),
    ("PeerAuthentication", "mtls: {mode: SOMETIMES}\n", "must be one of UNSET, DISABLE, PERMISSIVE, STRICT"),
    (
        "RequestAuthentication",
        "jwtRules: [{audiences: [a]}]\n",
        "spec.jwtRules[0].issuer: issuer or jwksUri must be set",
    ),
    (
        "RequestAuthentication",
        "jwtRules: [{issuer: a, jwksUri: 'https://a/jwks', jwks: '{}'}]\n",
        "only one of jwks or jwksUri can be set",
    ),
    (
        "AuthorizationPolicy",
        "action: CUSTOM\nrules: [{}]\n",
        "provider.name must not be empty with action CUSTOM",
    ),
    (
        "AuthorizationPolicy",
        "action: DENY\nprovider: {name: x}\nrules: [{}]\n",
        "provider must not be set with a non-CUSTOM action",
    ),
    ("AuthorizationPolicy", "action: MAYBE\n", "must be one of ALLOW, DENY, AUDIT, CUSTOM"),
    ("AuthorizationPolicy", "rules: [{to: [{operation: {ports: ['99999']}}]}]\n", "must be a port number"),
    # digits str.isdigit() takes and int() refuses (or reads): an error naming the field, not a crash
    ("AuthorizationPolicy", "rules: [{to: [{operation: {ports: ['²']}}]}]\n", "must be a port number"),
    ("AuthorizationPolicy", "rules: [{to: [{operation: {ports: ['٣']}}]}]\n", "must be a port number"),
    (
        "AuthorizationPolicy",
        "rules: [{when: [{key: source.ip, values: [not-an-ip]}]}]\n",
        "must be an IP address or CIDR block",
    ),
    (
        "AuthorizationPolicy",
        "rules: [{when: [{key: request.body, values: [x]}]}]\n",
        'unknown attribute (got "request.body")',
    ),
    (
        "AuthorizationPolicy",
        "rules: [{from: [{source: {trustDomains: ['a*b']}}]}]\n",
        "wildcard is only allowed at the start or end",
    ),
    # --- meshbus.io
    (
        "LocalRateLimit",
        "tokenBucket: {maxTokens: 0, fillInterval: 1s}\n",
        "spec.tokenBucket.maxTokens: must be > 0 (got 0)",
    ),
    (
        "LocalRateLimit",
        "tokenBucket: {maxTokens: 1}\n",
        "spec.tokenBucket.fillInterval: required field is missing",
    ),
    (
        "LocalRateLimit",
        "tokenBucket: {maxTokens: 1, fillInterval: 1s, tokensPerFill: 0}\n",
        "tokensPerFill: must be > 0",
    ),
    ("Plugin", "filter: Rate Limit\n", "filter must be the name of an installed filter"),
    ("Plugin", "filter: a\nmatch: [{ports: [{number: 80}, {number: 80}]}]\n", "Duplicate value"),
    # --- Gateway / Sidecar / WorkloadEntry
    (
        "Gateway",
        "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]\n",
        "an HTTPS server needs tls settings",
    ),
    (
        "Sidecar",
        "egress: [{hosts: ['nope']}]\n",
        'spec.egress[0].hosts[0]: hosts must be of the form "namespace/dnsName"',
    ),
    ("Sidecar", "egress: [{hosts: ['./bad host']}]\n", "spec.egress[0].hosts[0]: host must be a DNS name"),
    ("WorkloadEntry", "ports: {http: 80}\n", "spec.address: address is required"),
]


@pytest.mark.parametrize(("kind", "spec", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_semantic_rule(kind: str, spec: str, message: str) -> None:
    result = load_spec(kind, spec)
    rendered = errors(result)
    assert any(message in e for e in rendered), "\n".join(rendered) or "no errors"


def test_single_destination_needs_no_weight() -> None:
    assert load_spec("VirtualService", vs(ROUTE)).ok
    assert load_spec("VirtualService", vs("- route: [{destination: {host: r}, weight: 100}]\n")).ok


def test_single_destination_with_partial_weight_warns() -> None:
    result = load_spec("VirtualService", vs("- route: [{destination: {host: r}, weight: 40}]\n"))
    assert result.ok
    assert "a single destination always gets 100% of traffic" in warnings(result)[0]


def test_header_presence_match_is_allowed() -> None:
    assert load_spec(
        "VirtualService", vs("- match: [{headers: {x-canary: {}}}]\n  route: [{destination: {host: r}}]\n")
    ).ok


def test_fault_with_retries_warns_that_they_do_not_apply() -> None:
    result = load_spec(
        "VirtualService",
        vs(
            "- route: [{destination: {host: r}}]\n  retries: {attempts: 2}\n"
            "  fault: {abort: {httpStatus: 500, percentage: {value: 5}}}\n"
        ),
    )
    assert result.ok
    assert any("timeouts and retries do not apply" in w for w in warnings(result))


def test_retry_on_accepts_envoy_policies_and_status_codes() -> None:
    spec = vs(
        "- route: [{destination: {host: r}}]\n  retries: {attempts: 3, retryOn: "
        "'5xx,gateway-error,reset,connect-failure,refused-stream,retriable-status-codes,503,unavailable'}\n"
    )
    assert load_spec("VirtualService", spec).ok


def test_retry_on_with_a_non_ascii_digit_is_refused_by_name() -> None:
    spec = vs("- route: [{destination: {host: r}}]\n  retries: {attempts: 3, retryOn: '5xx,²'}\n")
    assert any('unknown retry policy "²"' in e for e in errors(load_spec("VirtualService", spec)))


def test_istio_mutual_with_sni_is_fine() -> None:
    assert load_spec(
        "DestinationRule", "host: r\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: r.default}}\n"
    ).ok


def test_hosts_accept_fqdn_short_and_wildcard() -> None:
    spec = vs(ROUTE, hosts='[r, r.default, r.default.svc.cluster.local, "*.example.com", 10.0.0.1]')
    assert load_spec("VirtualService", spec).ok


def test_gateway_binding_warns_no_gateway_proxy() -> None:
    result = load_spec("VirtualService", f"hosts: [r]\ngateways: [gw]\nhttp:\n{ROUTE}")
    assert result.ok
    assert any("no gateway proxy yet" in w for w in warnings(result))


def test_empty_authorization_policy_is_allow_nothing_and_valid() -> None:
    assert load_spec("AuthorizationPolicy", "{}\n").ok


def test_service_entry_addresses_must_be_ip_or_cidr() -> None:
    result = load_spec(
        "ServiceEntry", "hosts: [a.com]\naddresses: [10.0.0.0/24, nope]\nports: [{number: 80, name: http}]\n"
    )
    assert errors(result) == [
        't.yaml:7: ServiceEntry default/test: spec.addresses[1]: must be an IP address or CIDR block (got "nope")'
    ]


def test_per_try_timeout_longer_than_route_timeout_warns() -> None:
    result = load_spec(
        "VirtualService",
        vs(
            "- route: [{destination: {host: r}}]\n  timeout: 1s\n  retries: {attempts: 2, perTryTimeout: 2s}\n"
        ),
    )
    assert result.ok
    assert any("perTryTimeout (2s) is longer than the route timeout (1s)" in w for w in warnings(result))
