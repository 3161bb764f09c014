"""The route table's inline scan (prefix runs, exact header tests, skipping header-only routes when the
request lacks those headers) picks exactly the route a plain first-match over the predicates picks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbus.proxy.core.routing import RequestView, Route, VirtualHost
from tests.unit.proxy.conftest import SERVICES, build

pytestmark = pytest.mark.unit

TABLE = build(
    SERVICES
    + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: p1
    match: [{uri: {prefix: /api/v1/}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: p2
    match: [{uri: {prefix: /api/}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: canary
    match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: p3
    match: [{uri: {prefix: /static/}}, {uri: {prefix: /img/}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: user-prefix
    match: [{headers: {end-user: {prefix: ja}}, uri: {prefix: /u/}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: present
    match: [{headers: {x-debug: {}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: without
    match: [{withoutHeaders: {x-canary: {exact: "no"}}, uri: {prefix: /w/}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: ci
    match: [{uri: {prefix: /CI/}, ignoreUriCase: true}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: p4
    match: [{uri: {prefix: /p4}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: p5
    match: [{uri: {prefix: /p5}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: default
    route: [{destination: {host: reviews, subset: v1}}]
""",
)


def _vhost() -> VirtualHost:
    vh = TABLE.outbound.virtual_host_for("reviews")
    assert vh is not None
    return vh


def _reference(vh: VirtualHost, req: RequestView) -> Route | None:
    """Istio first-match, the plain way: call every entry's combined predicate in order."""
    for pred, route in vh._entries:
        if pred is None or pred(req):
            return route
    return None


paths = st.one_of(
    st.sampled_from(
        ["/", "/api/v1/x", "/api/x", "/static/a", "/img/b", "/u/1", "/w/1", "/exact", "/exact?q=1", "/ci/x",
         "/CI/x", "/p4", "/p5x", "/p4/p5"]
    ),
    st.text(alphabet="/apiv1stcwexgCIu5", max_size=12),
)  # fmt: skip
header_values = st.sampled_from(["yes", "no", "jason", "ja", "", "YES"])
headers = st.dictionaries(
    st.sampled_from(["x-canary", "end-user", "x-debug", "other"]), header_values, max_size=4
)


@settings(max_examples=500, deadline=None)
@given(path=paths, hdrs=headers)
def test_scan_matches_the_plain_first_match(path: str, hdrs: dict[str, str]) -> None:
    vh = _vhost()
    req = RequestView("GET", path, "reviews", hdrs, "10.0.0.1")
    assert vh.match(req) is _reference(vh, req)


def test_the_examples_land_where_istio_says() -> None:
    vh = _vhost()

    def name(path: str, **h: str) -> str | None:
        r = vh.match(
            RequestView("GET", path, "reviews", {k.replace("_", "-"): v for k, v in h.items()}, "1.2.3.4")
        )
        return None if r is None else r.name

    assert name("/api/v1/a") == "p1"  # first of a prefix run wins over a later, shorter prefix
    assert name("/api/v2") == "p2"
    assert name("/x", x_canary="yes") == "canary"
    assert name("/api/x", x_canary="yes") == "p2"  # earlier route first
    assert name("/img/1") == "p3"
    assert name("/u/1", end_user="jason") == "user-prefix"
    assert name("/u/1") == "default"  # header-only routes skipped when the header is absent
    assert name("/zzz", x_debug="") == "present"
    assert name("/w/1", x_canary="no") == "default" and name("/w/1") == "without"
    assert name("/ci/a") == "ci"
    assert name("/p5") == "p5"
