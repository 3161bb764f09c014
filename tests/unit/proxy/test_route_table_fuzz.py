"""Route matching never raises, whatever the request looks like (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbus.proxy.core.routing import RequestView
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
  hosts: [reviews, "*.example.com"]
  http:
  - match: [{uri: {regex: "/a/[0-9]+"}, queryParams: {q: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{headers: {x-h: {prefix: p}}, withoutHeaders: {x-w: {}}}, {method: {exact: PUT}}]
    rewrite: {uri: /b}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /c}, ignoreUriCase: true}]
    redirect: {scheme: https, derivePort: FROM_REQUEST_PORT}
  - route: [{destination: {host: reviews, subset: v3}}]
""",
    app_port=8080,
)

text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)
authority = st.one_of(
    text,
    st.sampled_from(
        ["reviews", "reviews:9080", "x.example.com:1", "[::1]:80", "[", ":", "reviews:", "a:99999"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "OPTIONS", "BREW"]),
    path=st.one_of(text, st.just("/a/12?q=1"), st.just("/C/x?")),
    authority=authority,
    headers=st.dictionaries(st.sampled_from(["x-h", "x-w", "cookie", "origin"]), text, max_size=3),
)
def test_match_and_actions_never_raise(
    method: str, path: str, authority: str, headers: dict[str, str]
) -> None:
    req = RequestView(method, path, authority, headers, "10.0.0.1")
    for table in (TABLE.outbound, TABLE.inbound):
        route = table.match(req)
        if route is None:
            continue
        if route.kind == "redirect":
            status, location = route.redirect(req)
            assert status == 301 and location.startswith("https://")
        else:
            route.rewrite_path(req)
            assert route.pick_destination(0.5).cluster
