"""The filter chain without sockets: order, per-hook lists, local-reply visibility, built-in filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from meshbus.proxy.codec.http1 import RequestHead
from meshbus.proxy.core import flags as F
from meshbus.proxy.core.routing import Destination, RequestView
from meshbus.proxy.filters.authz import AUTHORIZATION
from meshbus.proxy.filters.builtin import BUILTIN_FILTERS, LAZY_FILTERS, build_chain
from meshbus.proxy.filters.chain import (
    AUTHN,
    AUTHZ,
    BUILTIN,
    EMPTY_CHAIN,
    HOOK_DONE,
    HOOK_REQUEST_HEADERS,
    HOOK_RESPONSE_HEADERS,
    ROUTER,
    STATS,
    UNSPECIFIED,
    Delay,
    FilterChain,
    HttpFilter,
    LocalReply,
)
from meshbus.proxy.filters.cors import CORS, CorsFilter, CorsPolicy
from meshbus.proxy.filters.fault import FAULT, FaultFilter, FaultPolicy
from meshbus.proxy.filters.global_ratelimit import GLOBAL_RATELIMIT
from meshbus.proxy.filters.headerops import (
    HEADER_OPS,
    HeaderOps,
    HeaderOpsFilter,
    RouteHeaderOps,
    make_header_ops,
)
from meshbus.proxy.filters.jwt_authn import JWT_AUTHN
from meshbus.proxy.filters.ratelimit import LOCAL_RATELIMIT, LocalRateLimitFilter, TokenBucket

pytestmark = pytest.mark.unit


def f(
    name: str, phase: int = UNSPECIFIED, priority: int = 0, hooks: int = HOOK_REQUEST_HEADERS
) -> HttpFilter:
    return HttpFilter(name, phase, priority, hooks)


@dataclass
class Ctx:
    """A FilterContext without an exchange."""

    head: Any = None
    view: Any = None
    route: Any = None
    dest: Destination | None = None
    flags: list[str] = field(default_factory=list)
    t0: float = 0.0
    status: int = 0
    resp_headers: list[tuple[str, str]] = field(default_factory=list)
    is_local: bool = False
    req_ops: HeaderOps | None = None
    dc: Any = None
    filter_state: dict[str, Any] | None = None


def ctx(method: str = "GET", headers: dict[str, str] | None = None, **kw: Any) -> Ctx:
    h = headers or {}
    head = RequestHead(method, "/", "1.1", list(h.items()), dict(h), True, False, 0, 0)
    return Ctx(head=head, view=RequestView(method, "/", "reviews", h, "10.0.0.1"), **kw)


def test_order_is_phase_then_higher_priority_then_name() -> None:
    chain = FilterChain(
        [
            f("router-side", ROUTER),
            f("plugin-b", UNSPECIFIED, 5),
            f("stats", STATS),
            f("plugin-a", UNSPECIFIED, 5),
            f("authz-low", AUTHZ, 1),
            f("authz-high", AUTHZ, 1000),
            f("builtin", BUILTIN),
            f("authn", AUTHN),
        ]
    )
    assert chain.describe() == [
        "authn",
        "authz-high",
        "authz-low",
        "stats",
        "builtin",
        "plugin-a",
        "plugin-b",
        "router-side",
    ]


def test_hooks_are_listed_per_kind_and_responses_run_in_reverse() -> None:
    a = f("a", AUTHN, hooks=HOOK_REQUEST_HEADERS | HOOK_RESPONSE_HEADERS)
    b = f("b", AUTHZ, hooks=HOOK_DONE)
    c = f("c", STATS, hooks=HOOK_RESPONSE_HEADERS)
    chain = FilterChain([c, b, a])
    assert chain.request_headers == (a,)
    assert chain.response_headers == (c, a)
    assert chain.done == (b,)
    assert chain.request_body == () and chain.response_body == ()
    assert len(chain) == 3 and not EMPTY_CHAIN


def test_a_local_reply_is_seen_only_by_the_filters_before_the_one_that_sent_it() -> None:
    a = f("a", AUTHN, hooks=HOOK_RESPONSE_HEADERS)
    b = f("b", AUTHZ, hooks=HOOK_REQUEST_HEADERS)
    c = f("c", STATS, hooks=HOOK_RESPONSE_HEADERS)
    chain = FilterChain([a, b, c])
    assert chain.response_filters_before(b) == (a,)
    assert chain.response_filters_before(a) == ()
    assert chain.response_filters_before(None) == (c, a)  # the router's own replies pass them all


def test_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        FilterChain([f("x"), f("x", AUTHN)])


def test_build_chain_refuses_unknown_names_and_wrong_config_types() -> None:
    assert build_chain({}) is EMPTY_CHAIN
    with pytest.raises(ValueError, match=r"no filter named 'meshbus\.filters\.http\.nope'"):
        build_chain({"meshbus.filters.http.nope": object()})
    with pytest.raises(TypeError, match="takes FaultPolicy config, got TokenBucket"):
        build_chain({FAULT: TokenBucket(1, 1, 1.0)})
    chain = build_chain(
        {
            HEADER_OPS: RouteHeaderOps(),
            FAULT: FaultPolicy(abort_status=500, abort_percent=100),
            LOCAL_RATELIMIT: TokenBucket(1, 1, 1.0),
        }
    )
    # the built-ins' own order, whatever the map's: rate limit, CORS, fault ... header ops last
    assert chain.describe() == [LOCAL_RATELIMIT, FAULT, HEADER_OPS]
    assert {*BUILTIN_FILTERS, *LAZY_FILTERS} == {
        LOCAL_RATELIMIT, CORS, FAULT, HEADER_OPS, JWT_AUTHN, GLOBAL_RATELIMIT, AUTHORIZATION,
    }  # fmt: skip


def test_builtins_run_rate_limit_then_cors_then_fault() -> None:
    cors = CorsPolicy(origin_preds=(lambda o: True,))
    chain = FilterChain(
        [
            FaultFilter(FaultPolicy(abort_status=500, abort_percent=100)),
            CorsFilter(cors),
            LocalRateLimitFilter(TokenBucket(1, 1, 1.0)),
        ]
    )
    assert chain.describe() == [LOCAL_RATELIMIT, CORS, FAULT]


def test_rate_limit_filter_answers_429_rl_when_the_bucket_is_empty() -> None:
    flt = LocalRateLimitFilter(TokenBucket(2, 1, 1.0))
    assert flt.on_request_headers(ctx(t0=10.0)) is None
    assert flt.on_request_headers(ctx(t0=10.1)) is None
    r = flt.on_request_headers(ctx(t0=10.2))
    assert isinstance(r, LocalReply) and (r.status, r.flag) == (429, F.RL)
    assert flt.on_request_headers(ctx(t0=11.0)) is None  # refilled after the interval


def test_fault_filter_delays_then_aborts_and_marks_the_flags() -> None:
    both = FaultFilter(FaultPolicy(delay=0.5, delay_percent=100, abort_status=503, abort_percent=100))
    c = ctx()
    r = both.on_request_headers(c)
    assert isinstance(r, Delay) and r.seconds == 0.5
    assert isinstance(r.then, LocalReply) and (r.then.status, r.then.flag) == (503, F.FI)
    assert c.flags == [F.DI]
    abort_only = FaultFilter(FaultPolicy(abort_status=418, abort_percent=100))
    r = abort_only.on_request_headers(ctx())
    assert isinstance(r, LocalReply) and r.status == 418
    never = FaultFilter(FaultPolicy(abort_status=418, abort_percent=0))
    assert never.on_request_headers(ctx()) is None


def test_cors_filter_answers_preflights_and_decorates_responses() -> None:
    cors = CorsFilter(CorsPolicy(origin_preds=(lambda o: o == "https://app",), allow_methods="GET"))
    pre = ctx("OPTIONS", {"origin": "https://app", "access-control-request-method": "GET"})
    r = cors.on_request_headers(pre)
    assert isinstance(r, LocalReply) and r.status == 200
    assert ("access-control-allow-origin", "https://app") in r.headers
    assert cors.on_request_headers(ctx("GET", {"origin": "https://app"})) is None
    actual = ctx("GET", {"origin": "https://app"}, status=200)
    cors.on_response_headers(actual)
    assert actual.resp_headers == [("access-control-allow-origin", "https://app")]
    refused = ctx("GET", {"origin": "https://app"}, status=503, is_local=True)
    cors.on_response_headers(refused)
    assert refused.resp_headers == []  # local error replies get no CORS headers


def test_header_ops_filter_applies_the_destination_then_the_route() -> None:
    dest = Destination(
        "c",
        "reviews",
        9080,
        request_headers=make_header_ops(set_={"x-v": "dest", "x-d": "1"}),
        response_headers=make_header_ops(add={"x-served": "dest"}),
    )
    flt = HeaderOpsFilter(
        RouteHeaderOps(make_header_ops(set_={"x-v": "route"}), make_header_ops(remove=["server"]), True, True)
    )
    assert flt.hooks == HOOK_REQUEST_HEADERS | HOOK_RESPONSE_HEADERS
    c = ctx(dest=dest)
    assert flt.on_request_headers(c) is None
    assert c.req_ops is not None and c.req_ops.apply([("x-v", "client")]) == [("x-d", "1"), ("x-v", "route")]
    c.resp_headers = [("server", "app"), ("a", "b")]
    flt.on_response_headers(c)
    assert c.resp_headers == [("a", "b"), ("x-served", "dest")]
    plain = ctx(dest=Destination("c", "reviews", 9080))
    HeaderOpsFilter(RouteHeaderOps()).on_request_headers(plain)
    assert plain.req_ops is None  # nothing to do: the head may go out as received
    request_only = HeaderOpsFilter(RouteHeaderOps(make_header_ops(set_={"a": "1"})))
    assert request_only.hooks == HOOK_REQUEST_HEADERS  # responses keep their pass-through path
