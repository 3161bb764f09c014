"""Route actions and host resolution compiled from real VirtualService YAML."""

from __future__ import annotations

from collections import Counter

import pytest

from meshbus.proxy.build.runtime import RuntimeBuildError
from meshbus.proxy.filters.fault import FAULT, FaultPolicy
from meshbus.proxy.filters.headerops import HEADER_OPS, RouteHeaderOps
from tests.unit.proxy.conftest import SERVICES, build, build_unvalidated, req

pytestmark = pytest.mark.unit


def vs(http_yaml: str, hosts: str = "[reviews]", extra: str = "") -> str:
    return (
        SERVICES
        + extra
        + f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: {hosts}
  http:
"""
        + http_yaml
    )


SIMPLE = """
  - name: all
    route: [{destination: {host: reviews, subset: v1}}]
"""


@pytest.mark.parametrize(
    "authority",
    [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "Reviews.Default.svc.cluster.local.:9080",
    ],
)
def test_every_alias_of_the_host_routes(authority: str) -> None:
    rt = build(vs(SIMPLE))
    route = rt.outbound.match(req(authority=authority))
    assert route is not None and route.name == "all"
    assert route.pick_destination(0.5).cluster == "outbound|9080|v1|reviews.default.svc.cluster.local"


def test_short_name_not_routed_from_another_namespace() -> None:
    rt = build(vs(SIMPLE), namespace="other")
    assert rt.outbound.match(req(authority="reviews")) is None
    assert rt.outbound.match(req(authority="reviews.default")) is not None


def test_unknown_authority_gives_no_route() -> None:
    rt = build(vs(SIMPLE))
    assert rt.outbound.match(req(authority="nosuch:9080")) is None


def test_service_without_virtual_service_gets_default_route() -> None:
    rt = build(vs(SIMPLE))
    route = rt.outbound.match(req(authority="ratings:9080"))
    assert route is not None and route.name == "default"
    dest = route.pick_destination(0.1)
    assert dest.cluster == "outbound|9080||ratings.default.svc.cluster.local"
    assert route.retry.attempts == 2 and route.timeout is None
    ep = rt.clusters[dest.cluster].pick(None, 0.0)
    assert ep is not None and ep.key == ("10.0.1.1", 9080)


def test_weights_distribution_with_injected_rand() -> None:
    rt = build(
        vs("""
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
""")
    )
    route = rt.outbound.match(req())
    counts = Counter(route.pick_destination(i / 1000).subset for i in range(1000))
    assert counts == {"v1": 900, "v2": 100}
    assert route.pick_destination(0.0).subset == "v1"
    assert route.pick_destination(0.8999).subset == "v1"
    assert route.pick_destination(0.9).subset == "v2"
    assert route.pick_destination(0.99999).subset == "v2"


def test_zero_weight_destination_gets_nothing() -> None:
    rt = build(
        vs("""
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 100}
    - {destination: {host: reviews, subset: v2}, weight: 0}
""")
    )
    route = rt.outbound.match(req())
    assert {route.pick_destination(i / 100).subset for i in range(100)} == {"v1"}


def test_unknown_subset_is_a_build_error_naming_the_field() -> None:
    with pytest.raises(RuntimeBuildError) as ei:
        build(
            vs("""
  - route: [{destination: {host: reviews, subset: v9}}]
""")
        )
    msg = str(ei.value)
    assert msg.startswith("meshbus: test.yaml:")
    assert "VirtualService default/reviews: spec.http[0].route[0].destination.subset:" in msg
    assert "v9" in msg


def test_multi_port_service_needs_destination_port() -> None:
    extra = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi]
  resolution: STATIC
  ports: [{number: 80, name: http}, {number: 8080, name: http-alt}]
  endpoints: [{address: 10.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-multi, namespace: default}
spec:
  hosts: [front.example.com]
  http:
  - route: [{destination: {host: multi}}]
"""
    with pytest.raises(
        RuntimeBuildError, match=r"spec\.http\[0\]\.route\[0\]\.destination\.port: destination port"
    ):
        build(SERVICES + extra)


def test_vs_on_multi_port_service_uses_request_port() -> None:
    extra = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi]
  resolution: STATIC
  ports: [{number: 80, name: http}, {number: 8080, name: http-alt, targetPort: 9000}]
  endpoints: [{address: 10.0.2.1, ports: {http: 8081}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi]
  http:
  - route: [{destination: {host: multi}}]
"""
    rt = build(SERVICES + extra)
    r80 = rt.outbound.match(req(authority="multi"))  # no port: port 80 when declared
    r8080 = rt.outbound.match(req(authority="multi:8080"))
    assert r80.pick_destination(0).cluster == "outbound|80||multi.default.svc.cluster.local"
    assert r8080.pick_destination(0).cluster == "outbound|8080||multi.default.svc.cluster.local"
    # endpoint port by name, else targetPort, else the service port
    assert rt.clusters["outbound|80||multi.default.svc.cluster.local"].endpoints[0].port == 8081
    assert rt.clusters["outbound|8080||multi.default.svc.cluster.local"].endpoints[0].port == 9000


def test_redirect_defaults_and_fields() -> None:
    rt = build(
        vs("""
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, authority: secure.example.com, redirectCode: 308}
  - match: [{uri: {prefix: /port}}]
    redirect: {port: 8443, scheme: https}
  - match: [{uri: {prefix: /derive}}]
    redirect: {derivePort: FROM_REQUEST_PORT, authority: other}
  - match: [{uri: {prefix: /proto}}]
    redirect: {derivePort: FROM_PROTOCOL_DEFAULT}
""")
    )
    t = rt.outbound

    def redirect(path: str, authority: str = "reviews:9080") -> tuple[int, str]:
        r = req(path=path, authority=authority)
        route = t.match(r)
        assert route.kind == "redirect"
        return route.redirect(r)

    assert redirect("/old?a=1") == (301, "http://reviews:9080/new?a=1")
    assert redirect("/secure/x") == (308, "https://secure.example.com/secure/x")
    assert redirect("/port") == (301, "https://reviews:8443/port")
    assert redirect("/derive") == (301, "http://other:9080/derive")
    assert redirect("/derive", authority="reviews") == (301, "http://other:9080/derive")
    assert redirect("/proto") == (301, "http://reviews/proto")


def test_rewrite_replaces_matched_prefix() -> None:
    rt = build(
        vs("""
  - match: [{uri: {prefix: /v1/api}}]
    rewrite: {uri: /api, authority: backend.internal}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {exact: /login}}]
    rewrite: {uri: /auth/login}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /r}}]
    rewrite: {uriRegexRewrite: {match: "^/r/([^/]+)/(.*)$", rewrite: '/\\2/\\1'}}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
    rewrite: {uri: /root/}
""")
    )
    t = rt.outbound

    def rewritten(path: str) -> str | None:
        r = req(path=path)
        return t.match(r).rewrite_path(r)

    assert rewritten("/v1/api/users?x=1") == "/api/users?x=1"
    assert t.match(req(path="/v1/api")).rewrite_authority == "backend.internal"
    assert rewritten("/login?next=/") == "/auth/login?next=/"
    assert rewritten("/r/a/b/c?q") == "/b/c/a?q"
    assert rewritten("/other") == "/root/other"  # catch-all is a "/" prefix


def test_no_rewrite_returns_none() -> None:
    rt = build(vs(SIMPLE))
    r = req(path="/x")
    route = rt.outbound.match(r)
    assert route.rewrite_path(r) is None and route.rewrite_authority is None


def test_direct_response() -> None:
    rt = build(
        vs("""
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: "ok\\n"}}
  - directResponse: {status: 503, body: {bytes: "ZG93bg=="}}
""")
    )
    a = rt.outbound.match(req(path="/health"))
    b = rt.outbound.match(req(path="/x"))
    assert (a.kind, a.direct_status, a.direct_body) == ("direct", 200, b"ok\n")
    assert (b.kind, b.direct_status, b.direct_body) == ("direct", 503, b"down")


def test_header_operations_route_and_destination_level() -> None:
    rt = build(
        vs("""
  - headers:
      request: {set: {x-route: r}, add: {x-multi: two}, remove: [x-secret]}
      response: {set: {x-served-by: mesh}, remove: [server]}
    route:
    - destination: {host: reviews, subset: v1}
      headers: {request: {set: {x-dest: v1}}, response: {add: {x-version: v1}}}
""")
    )
    route = rt.outbound.match(req())
    ops = route.filter_config[HEADER_OPS]
    assert isinstance(ops, RouteHeaderOps)
    h = [("Host", "reviews"), ("X-Secret", "s"), ("x-multi", "one"), ("X-Route", "old")]
    assert ops.request.apply(h) == [
        ("Host", "reviews"),
        ("x-multi", "one"),
        ("x-route", "r"),
        ("x-multi", "two"),
    ]
    assert ops.response.apply([("Server", "nginx"), ("a", "b")]) == [
        ("a", "b"),
        ("x-served-by", "mesh"),
    ]
    dest = route.pick_destination(0)
    assert dest.request_headers.apply([]) == [("x-dest", "v1")]
    assert dest.response_headers.apply([("x-version", "v0")]) == [("x-version", "v0"), ("x-version", "v1")]
    assert not ops.request.empty


def test_host_header_set_becomes_authority_rewrite() -> None:
    # config-api's validator asks for rewrite.authority instead; Istio also accepts this form.
    rt = build_unvalidated(
        vs("""
  - headers: {request: {set: {host: upstream.internal}}}
    route: [{destination: {host: reviews}}]
""")
    )
    route = rt.outbound.match(req())
    assert route.rewrite_authority == "upstream.internal"
    assert HEADER_OPS not in route.filter_config  # the host header became the rewrite, nothing is left


def test_timeout_retries_fault_mirror_compiled() -> None:
    rt = build(
        vs("""
  - match: [{uri: {prefix: /two}}]
    mirrors:
    - destination: {host: reviews, subset: v3}
    - {destination: {host: ratings}, percentage: {value: 5}}
    route: [{destination: {host: reviews, subset: v1}}]
  - timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "gateway-error,409"}
    fault:
      delay: {fixedDelay: 7s, percentage: {value: 100}}
      abort: {httpStatus: 555, percentage: {value: 10}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    route: [{destination: {host: reviews, subset: v1}}]
""")
    )
    route = rt.outbound.match(req())
    # Istio keeps timeout and retries on a faulted route (the fault filter runs before the router).
    assert route.timeout == 1.5
    assert route.retry.attempts == 3 and route.retry.per_try_timeout == 0.5
    assert route.retry.retry_on_status(409) and route.retry.retry_on_status(504)
    assert not route.retry.retry_on_status(500)
    fault = route.filter_config[FAULT]
    assert isinstance(fault, FaultPolicy)
    assert fault.decide(0.99, 0.05) == (7.0, 555)
    assert fault.decide(0.5, 0.5) == (7.0, None)
    (m1,) = route.mirrors
    assert m1.cluster == "outbound|9080||ratings.default.svc.cluster.local"
    assert m1.should_mirror(0.2) and not m1.should_mirror(0.3)
    m2, m3 = rt.outbound.match(req(path="/two")).mirrors
    assert m2.cluster == "outbound|9080|v3|reviews.default.svc.cluster.local"
    assert m2.should_mirror(0.999)  # absent percentage = 100%
    assert m3.should_mirror(0.04) and not m3.should_mirror(0.06)


def test_mirror_shadow_authority() -> None:
    from meshbus.proxy.core.routing import Mirror

    assert Mirror.shadow_authority("ratings:9080") == "ratings-shadow:9080"
    assert Mirror.shadow_authority("ratings") == "ratings-shadow"
    assert Mirror.shadow_authority("[::1]:80") == "[::1]-shadow:80"


def test_gateway_only_virtual_service_is_not_applied_to_sidecar() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gw, namespace: default}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway]
  http:
  - name: gw-only
    route: [{destination: {host: reviews, subset: v2}}]
"""
    )
    route = build(text).outbound.match(req())
    assert route.name == "default"


def test_first_virtual_service_for_a_host_wins() -> None:
    text = (
        vs(SIMPLE)
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - name: second
    route: [{destination: {host: reviews, subset: v2}}]
"""
    )
    assert build(text).outbound.match(req()).name == "all"


def test_external_and_wildcard_virtual_service_hosts() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: default}
spec:
  hosts: [bookinfo.example.com, "*.apps.example.com"]
  http:
  - name: front
    route: [{destination: {host: reviews, port: {number: 9080}}}]
"""
    )
    t = build(text).outbound
    for authority in ("bookinfo.example.com", "bookinfo.example.com:8080", "x.apps.example.com:80"):
        route = t.match(req(authority=authority))
        assert route is not None and route.name == "front", authority
    assert t.match(req(authority="apps.example.com")) is None


def test_inbound_routes_everything_to_local_app() -> None:
    rt = build(SERVICES, app_port=8080)
    for authority in ("anything", "reviews:9080", "10.0.0.1:15006"):
        route = rt.inbound.match(req(authority=authority, path="/x"))
        assert route is not None
        dest = route.pick_destination(0.3)
        assert dest.cluster == "inbound|8080||"
        assert route.retry.attempts == 0
    ep = rt.clusters["inbound|8080||"].pick(None, 0.0)
    assert ep is not None and ep.key == ("127.0.0.1", 8080)


def test_inbound_without_app_port_has_no_routes() -> None:
    assert build(SERVICES).inbound.match(req()) is None


def test_destination_to_unknown_host_gets_empty_cluster() -> None:
    rt = build(
        vs("""
  - route: [{destination: {host: nowhere.example.com, port: {number: 80}}}]
""")
    )
    dest = rt.outbound.match(req()).pick_destination(0)
    assert dest.cluster == "outbound|80||nowhere.example.com"
    assert rt.clusters[dest.cluster].pick(None, 0.0) is None  # 503 UH at request time


def test_invalid_python_regex_is_a_build_error() -> None:
    # The validator rejects it too; the builder must not trust that it ran.
    with pytest.raises(RuntimeBuildError, match=r"spec\.http\[0\]\.match\[0\]\.uri\.regex"):
        build_unvalidated(
            vs("""
  - match: [{uri: {regex: "(?<name>x)"}}]
    route: [{destination: {host: reviews}}]
""")
        )


def test_match_port_selects_listener_port() -> None:
    extra = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi]
  resolution: STATIC
  ports: [{number: 80, name: http}, {number: 8080, name: http-alt}]
  endpoints: [{address: 10.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: multi, namespace: default}
spec:
  hosts: [multi]
  http:
  - name: alt-only
    match: [{port: 8080}]
    route: [{destination: {host: multi, port: {number: 8080}}}]
  - name: rest
    route: [{destination: {host: multi, port: {number: 80}}}]
"""
    t = build(SERVICES + extra).outbound
    assert t.match(req(authority="multi:8080")).name == "alt-only"
    assert t.match(req(authority="multi:80")).name == "rest"
    assert t.match(req(authority="multi")).name == "rest"


def test_equal_shares_when_no_weights_given() -> None:
    rt = build_unvalidated(
        vs("""
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v2}
""")
    )
    route = rt.outbound.match(req())
    assert Counter(route.pick_destination(i / 100).subset for i in range(100)) == {"v1": 50, "v2": 50}


def test_redirect_to_https_drops_default_ports() -> None:
    rt = build(
        vs("""
  - redirect: {scheme: https}
""")
    )
    route = rt.outbound.match(req(authority="reviews:9080"))
    assert route.redirect(req(authority="reviews:80", path="/a")) == (301, "https://reviews/a")
    assert route.redirect(req(authority="reviews:9080", path="/a")) == (301, "https://reviews:9080/a")
    assert route.redirect(req(authority="reviews", path="/")) == (301, "https://reviews/")


def test_wildcard_most_specific_suffix_wins() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broad, namespace: default}
spec:
  hosts: ["*.example.com"]
  http: [{name: broad, route: [{destination: {host: reviews, port: {number: 9080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: narrow, namespace: default}
spec:
  hosts: ["*.api.example.com"]
  http: [{name: narrow, route: [{destination: {host: reviews, port: {number: 9080}}}]}]
"""
    )
    t = build(text).outbound
    assert t.match(req(authority="a.api.example.com")).name == "narrow"
    assert t.match(req(authority="a.web.example.com")).name == "broad"


SOURCE_SCOPED = """
  - name: from-productpage-v2
    match:
    - sourceLabels: {app: productpage, version: v2}
      headers: {x-a: {exact: "1"}}
    - sourceLabels: {app: productpage, version: v2}
      uri: {prefix: /pp}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: from-namespace-test
    match: [{sourceNamespace: test}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: all
    route: [{destination: {host: reviews, subset: v1}}]
"""


@pytest.mark.parametrize(
    "labels,namespace,want",
    [
        ({"app": "productpage", "version": "v2", "extra": "x"}, "default", ["from-productpage-v2", "all"]),
        ({"app": "productpage", "version": "v1"}, "default", ["all", "all"]),
        ({}, "default", ["all", "all"]),  # a proxy without labels (standalone, no --labels)
        ({"app": "productpage", "version": "v2"}, "test", ["from-productpage-v2", "from-namespace-test"]),
        ({}, "test", ["from-namespace-test", "from-namespace-test"]),
    ],
)
def test_source_labels_and_namespace_scope_match_blocks_to_this_workload(
    labels: dict[str, str], namespace: str, want: list[str]
) -> None:
    # Istio: a match block with sourceLabels / sourceNamespace only exists on the sidecars of the
    # workloads it names; on every other proxy the next route matches.
    rt = build(vs(SOURCE_SCOPED), namespace=namespace, labels=labels)
    got = [
        rt.outbound.match(req(authority="reviews.default", headers={"x-a": "1"})),
        rt.outbound.match(req(authority="reviews.default", path="/other")),
    ]
    assert [r.name if r is not None else None for r in got] == want


def test_a_rebuild_for_other_labels_compiles_afresh() -> None:
    from meshbus.proxy.build.runtime import build_runtime
    from tests.unit.proxy.conftest import load

    resources = load(vs(SOURCE_SCOPED))  # the same objects: an incremental build could reuse routes
    first = build_runtime(resources, labels={"app": "productpage", "version": "v2"})  # type: ignore[arg-type]
    same = build_runtime(resources, labels={"version": "v2", "app": "productpage"}, previous=first)  # type: ignore[arg-type]
    other = build_runtime(resources, labels={}, previous=first)  # type: ignore[arg-type]
    probe = req(authority="reviews.default", headers={"x-a": "1"})
    assert same.memo.stats["hosts_reused"] > 0  # label order does not matter
    assert same.outbound.match(probe).name == "from-productpage-v2"  # type: ignore[union-attr]
    assert other.memo.stats["hosts_reused"] == 0
    assert other.outbound.match(probe).name == "all"  # type: ignore[union-attr]
