from __future__ import annotations

import pytest

from meshbus.bus.config.types import StringMatch
from meshbus.bus.config.virtual_service import CorsPolicy as CorsSpec
from meshbus.proxy.filters.cors import CORS, CorsPolicy, cors_policy_from
from tests.unit.proxy.conftest import SERVICES, build, req

pytestmark = pytest.mark.unit


def policy(**kw: object):
    spec = CorsSpec(
        allow_origins=(StringMatch(exact="https://a.example.com"), StringMatch(regex=r"https://.*\.b\.com")),
        allow_methods=("GET", "POST"),
        allow_headers=("x-token", "content-type"),
        expose_headers=("x-trace",),
        max_age="86400s",
        allow_credentials=True,
        **kw,  # type: ignore[arg-type]
    )
    p = cors_policy_from(spec, "corsPolicy")
    assert p is not None
    return p


def preflight(origin: str | None, method: str = "OPTIONS", acrm: bool = True):
    h = {}
    if origin is not None:
        h["origin"] = origin
    if acrm:
        h["access-control-request-method"] = "POST"
    return req(method=method, headers=h)


def test_preflight_allowed_origin_answered() -> None:
    got = policy().preflight(preflight("https://a.example.com"))
    assert got == [
        ("access-control-allow-origin", "https://a.example.com"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "x-token,content-type"),
        ("access-control-max-age", "86400"),
    ]


def test_preflight_regex_origin() -> None:
    assert policy().preflight(preflight("https://x.b.com")) is not None
    assert policy().preflight(preflight("https://x.b.com.evil.io")) is None


def test_not_a_preflight() -> None:
    p = policy()
    assert p.preflight(preflight("https://a.example.com", method="GET")) is None
    assert p.preflight(preflight(None)) is None
    assert p.preflight(preflight("https://a.example.com", acrm=False)) is None


def test_unmatched_preflight_forward_by_default_ignore_when_asked() -> None:
    assert policy().preflight(preflight("https://evil.io")) is None  # forwarded to the app
    assert policy(unmatched_preflights="IGNORE").preflight(preflight("https://evil.io")) == []


def test_actual_request_response_headers() -> None:
    p = policy()
    got = p.response_headers(req(headers={"origin": "https://a.example.com"}))
    assert got == [
        ("access-control-allow-origin", "https://a.example.com"),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-trace"),
    ]
    assert p.response_headers(req(headers={"origin": "https://evil.io"})) == []
    assert p.response_headers(req()) == []


def test_wildcard_origin_echoes_request_origin() -> None:
    p = cors_policy_from(CorsSpec(allow_origins=(StringMatch(exact="*"),), allow_methods=("GET",)), "c")
    assert p is not None
    got = p.preflight(preflight("https://anyone.io"))
    assert got is not None and got[0] == ("access-control-allow-origin", "https://anyone.io")


def test_cors_policy_compiled_on_route() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - corsPolicy:
      allowOrigins: [{prefix: "https://"}]
      allowMethods: [GET]
      maxAge: 24h
    route: [{destination: {host: reviews}}]
"""
    )
    route = build(text).outbound.match(req())
    cors = route.filter_config[CORS]
    assert isinstance(cors, CorsPolicy)
    got = cors.preflight(preflight("https://site.io"))
    assert got is not None and ("access-control-max-age", "86400") in got
    assert cors.preflight(preflight("http://site.io")) is None


def test_deprecated_allow_origin_is_read_as_istio_reads_it() -> None:
    # Alone, it becomes exact allowOrigins (once each: the builder used to add them a second time).
    old = cors_policy_from(CorsSpec(allow_origin=("https://a.example.com", "*")), "corsPolicy")
    assert old is not None
    assert old.describe()["allowOrigins"] == [{"exact": "https://a.example.com"}, {"exact": "*"}]
    assert old.origin_allowed("https://anything.example")
    # Beside allowOrigins it is ignored, as in Istio (it used to widen the allowed origins).
    both = cors_policy_from(
        CorsSpec(allow_origins=(StringMatch(exact="https://a.example.com"),), allow_origin=("*",)),
        "corsPolicy",
    )
    assert both is not None
    assert both.origin_allowed("https://a.example.com") and not both.origin_allowed("https://evil.example")
