"""Istio match semantics: first-match order, blocks ORed, fields ANDed, StringMatch kinds."""

from __future__ import annotations

import pytest

from tests.unit.proxy.conftest import SERVICES, build, req

pytestmark = pytest.mark.unit

VS = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
"""


def table(http_yaml: str):
    return build(SERVICES + VS + http_yaml).outbound


def name_of(t, **kw) -> str | None:
    r = t.match(req(**kw))
    return None if r is None else r.name


def test_first_match_wins_in_order() -> None:
    t = table("""
  - name: first
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: second
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rest
    route: [{destination: {host: reviews, subset: v3}}]
""")
    assert name_of(t, path="/api/v2/x") == "first"  # earlier, broader rule wins
    assert name_of(t, path="/other") == "rest"


def test_match_blocks_are_ored_fields_anded() -> None:
    t = table("""
  - name: jason-or-get
    match:
    - {headers: {end-user: {exact: jason}}, uri: {prefix: /reviews}}
    - {method: {exact: DELETE}}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: rest
    route: [{destination: {host: reviews, subset: v1}}]
""")
    assert name_of(t, path="/reviews/1", headers={"end-user": "jason"}) == "jason-or-get"
    assert name_of(t, path="/other", headers={"end-user": "jason"}) == "rest"  # uri fails the AND
    assert name_of(t, path="/reviews/1") == "rest"  # header missing
    assert name_of(t, path="/x", method="DELETE") == "jason-or-get"  # second block


def test_no_match_returns_none() -> None:
    t = table("""
  - match: [{uri: {exact: /only}}]
    route: [{destination: {host: reviews}}]
""")
    assert t.match(req(path="/nope")) is None
    assert t.match(req(path="/only")) is not None


def test_uri_exact_ignores_query_prefix_does_not() -> None:
    t = table("""
  - name: exact
    match: [{uri: {exact: /productpage}}]
    route: [{destination: {host: reviews}}]
  - name: prefix
    match: [{uri: {prefix: "/static?v"}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, path="/productpage?u=normal") == "exact"
    assert name_of(t, path="/productpagex") is None
    assert name_of(t, path="/static?v=1") == "prefix"


def test_uri_regex_is_full_match_on_path_without_query() -> None:
    t = table("""
  - name: re
    match: [{uri: {regex: "/reviews/[0-9]+"}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, path="/reviews/12") == "re"
    assert name_of(t, path="/reviews/12?x=y") == "re"
    assert name_of(t, path="/reviews/12/extra") is None
    assert name_of(t, path="/x/reviews/12") is None


def test_ignore_uri_case_for_exact_and_prefix() -> None:
    t = table("""
  - name: ci
    match: [{uri: {prefix: /API}, ignoreUriCase: true}]
    route: [{destination: {host: reviews}}]
  - name: cs
    match: [{uri: {prefix: /Case}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, path="/api/x") == "ci"
    assert name_of(t, path="/Api/x") == "ci"
    assert name_of(t, path="/case") is None


def test_header_exact_prefix_regex_and_presence() -> None:
    t = table("""
  - name: exact
    match: [{headers: {x-a: {exact: one}}}]
    route: [{destination: {host: reviews}}]
  - name: prefix
    match: [{headers: {x-b: {prefix: pre}}}]
    route: [{destination: {host: reviews}}]
  - name: regex
    match: [{headers: {x-c: {regex: "v[0-9]"}}}]
    route: [{destination: {host: reviews}}]
  - name: present
    match: [{headers: {x-d: {}}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, headers={"x-a": "one"}) == "exact"
    assert name_of(t, headers={"x-a": "One"}) is None  # case-sensitive values
    assert name_of(t, headers={"x-b": "prefix-yes"}) == "prefix"
    assert name_of(t, headers={"x-c": "v7"}) == "regex"
    assert name_of(t, headers={"x-c": "v77"}) is None  # full match
    assert name_of(t, headers={"x-d": ""}) == "present"


def test_without_headers_negates() -> None:
    t = table("""
  - name: not-canary
    match: [{withoutHeaders: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: canary
    route: [{destination: {host: reviews, subset: v2}}]
""")
    assert name_of(t) == "not-canary"
    assert name_of(t, headers={"x-canary": "false"}) == "not-canary"
    assert name_of(t, headers={"x-canary": "true"}) == "canary"


def test_query_params() -> None:
    t = table("""
  - name: q
    match: [{queryParams: {debug: {exact: "true"}, flag: {exact: ""}}}]
    route: [{destination: {host: reviews}}]
  - name: re
    match: [{queryParams: {id: {regex: "[a-f]+"}}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, path="/x?debug=true&flag") == "q"
    assert name_of(t, path="/x?flag&debug=true") == "q"
    assert name_of(t, path="/x?debug=false&flag") is None
    assert name_of(t, path="/x?debug=true") is None
    assert name_of(t, path="/x?id=abc") == "re"
    assert name_of(t, path="/x?id=ab%63") == "re"  # decoded before matching


def test_method_authority_scheme() -> None:
    t = table("""
  - name: post
    match: [{method: {exact: POST}, authority: {prefix: reviews}}]
    route: [{destination: {host: reviews}}]
  - name: https
    match: [{scheme: {exact: https}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, method="POST") == "post"
    assert name_of(t, method="GET") is None
    assert name_of(t, scheme="https") == "https"


def test_match_name_is_appended_to_route_name() -> None:
    t = table("""
  - name: r
    match: [{name: a, uri: {prefix: /a}}, {name: b, uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, path="/a") == "r.a"
    assert name_of(t, path="/b") == "r.b"


def test_pseudo_header_keys_are_ignored_in_headers() -> None:
    t = table("""
  - name: r
    match: [{headers: {uri: {exact: /nothing}}}]
    route: [{destination: {host: reviews}}]
""")
    assert name_of(t, path="/anything") == "r"


def test_common_route_reads_no_headers() -> None:
    """A route without header matches must not touch the header mapping (hot path)."""

    class Exploding(dict):
        def get(self, *a, **k):  # type: ignore[override]
            raise AssertionError("headers read")

        def __contains__(self, k):  # type: ignore[override]
            raise AssertionError("headers read")

    t = table("""
  - name: p
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews}}]
  - name: rest
    route: [{destination: {host: reviews}}]
""")
    assert t.match(req(path="/b", headers=Exploding())).name == "rest"
