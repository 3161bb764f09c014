"""The global rate limit filter (proxy/filters/global_ratelimit.py) and its leased budgets, without a bus:
a fake meshbus-policy answers leases with futures the test completes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from meshbus.bus.config import load_text
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.ratelimit import LeaseReply, LeaseRequest
from meshbus.proxy.build.runtime import build_runtime
from meshbus.proxy.codec.http1 import RequestHead
from meshbus.proxy.core.routing import RequestView
from meshbus.proxy.filters.chain import LocalReply
from meshbus.proxy.filters.global_ratelimit import (
    BACKOFF_MIN,
    Budgets,
    GlobalRateLimitConfig,
    GlobalRateLimitFilter,
)

pytestmark = pytest.mark.unit


def rate_limit(rules: str, extra: str = "") -> GlobalRateLimitConfig:
    text = (
        "apiVersion: meshbus.io/v1\nkind: RateLimit\nmetadata: {name: api, namespace: default}\nspec:\n"
        f"  selector: {{matchLabels: {{app: reviews}}}}\n{extra}  rules:\n{rules}"
    )
    result = load_text(text, "rl.yaml")
    assert result.ok, result.validation.render()
    rt = build_runtime(result.resources, labels={"app": "reviews"}, app_port=9080)
    (route,) = rt.inbound.virtual_hosts[0].routes
    cfg = route.filter_config["meshbus.filters.http.ratelimit"]
    assert isinstance(cfg, GlobalRateLimitConfig)
    return cfg


@dataclass
class Policy:
    """A fake meshbus-policy: each lease is a future the test answers (or fails)."""

    asked: list[LeaseRequest] = field(default_factory=list)
    futures: list[asyncio.Future[LeaseReply]] = field(default_factory=list)

    def lease(self, request: LeaseRequest, timeout: float) -> asyncio.Future[LeaseReply]:
        self.asked.append(request)
        fut: asyncio.Future[LeaseReply] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    def answer(self, granted: int, remaining: int, reset: float = 0.5, window: int = 7) -> None:
        self.futures[-1].set_result(LeaseReply(granted, remaining, reset, window))


@dataclass
class Ctx:
    head: Any
    dc: Any
    view: Any = None
    filter_state: dict[str, Any] | None = None


@dataclass
class Peer:
    peer_ip: str = "10.0.0.9"


def request(headers: dict[str, str] | None = None, ip: str = "10.0.0.9") -> Ctx:
    h = dict(headers or {})
    return Ctx(
        RequestHead("GET", "/", "1.1", list(h.items()), h, True, False, 0, 0),
        Peer(ip),
        RequestView("GET", "/", "r", h, ip),
    )


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def run(
    f: GlobalRateLimitFilter, ctx: Ctx, policy: Policy | None = None, answer: tuple[int, int] | None = None
) -> Any:
    r = f.on_request_headers(ctx)
    if r is None or isinstance(r, LocalReply):
        return r
    task = asyncio.ensure_future(r)
    await asyncio.sleep(0)
    if answer is not None and policy is not None:
        policy.answer(*answer)
    return await task


def setup(cfg: GlobalRateLimitConfig) -> tuple[GlobalRateLimitFilter, Policy, Budgets, Clock]:
    policy, clock = Policy(), Clock()
    budgets = Budgets(policy, "node-1", clock)
    return GlobalRateLimitFilter(cfg, budgets), policy, budgets, clock


async def test_tokens_are_leased_then_spent_locally_and_refilled_in_the_background() -> None:
    f, policy, budgets, _clock = setup(rate_limit("  - limit: {requests: 100, unit: Second}\n"))
    assert await run(f, request(), policy, (10, 90)) is None
    (req,) = policy.asked
    assert (req.descriptor, req.requests, req.unit, req.hits, req.node) == (
        "default/api/0",
        100,
        "Second",
        10,
        "node-1",
    )
    for _ in range(4):  # spent locally: no question to meshbus-policy
        assert f.on_request_headers(request()) is None
    assert len(policy.asked) == 1
    # fewer than half a lease left: the next one is asked for in the background, requests go on
    for _ in range(3):
        assert f.on_request_headers(request()) is None
    assert len(policy.asked) == 2
    policy.answer(10, 80)
    await asyncio.sleep(0)
    assert budgets.by_key["default/api/0"].tokens == 12
    assert budgets.stats["leases"] == 2


async def test_over_the_limit_is_429_with_the_rate_limit_headers_until_the_window_ends() -> None:
    f, policy, _budgets, clock = setup(rate_limit("  - limit: {requests: 2, unit: Minute}\n"))
    assert await run(f, request(), policy, (1, 0)) is None  # the last token of the window
    r = f.on_request_headers(request())
    assert isinstance(r, LocalReply) and r.status == 429 and r.flag == "RL"
    assert dict(r.headers) == {
        "x-ratelimit-limit": "2, 2;w=60",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "1",
    }
    assert len(policy.asked) == 1  # the window is used up: refused locally, nobody asked
    clock.t += 0.6  # the window ended: ask again
    assert await run(f, request(), policy, (1, 0)) is None
    assert len(policy.asked) == 2


async def test_requests_waiting_together_share_one_lease_and_the_rest_ask_again() -> None:
    f, policy, _budgets, _clock = setup(rate_limit("  - limit: {requests: 1000, unit: Second}\n"))
    pending = [f.on_request_headers(request()) for _ in range(5)]
    tasks = [asyncio.ensure_future(p) for p in pending]
    await asyncio.sleep(0)
    assert len(policy.asked) == 1  # one lease for all five
    policy.answer(3, 900)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(policy.asked) == 2  # two were left without a token: a second lease
    policy.answer(100, 800)
    assert await asyncio.gather(*tasks) == [None] * 5


async def test_failure_mode_open_lets_requests_pass_and_stops_asking_for_a_while() -> None:
    f, policy, budgets, clock = setup(rate_limit("  - limit: {requests: 10, unit: Second}\n"))
    r = f.on_request_headers(request())
    task = asyncio.ensure_future(r)
    await asyncio.sleep(0)
    policy.futures[-1].set_exception(UnavailableError("no responders"))
    assert await task is None
    assert f.on_request_headers(request()) is None  # backing off: the failure mode at once, no question
    assert len(policy.asked) == 1 and budgets.stats["failure_mode"] == 2
    clock.t += BACKOFF_MIN
    again = f.on_request_headers(request())
    assert asyncio.iscoroutine(again) and len(policy.asked) == 2  # asks again
    again.close()


async def test_failure_mode_closed_answers_500_rlse() -> None:
    f, policy, _budgets, _clock = setup(
        rate_limit("  - limit: {requests: 10, unit: Second}\n", "  failureMode: Closed\n  timeout: 20ms\n")
    )
    assert f.config.timeout == 0.02 and not f.config.fail_open
    task = asyncio.ensure_future(f.on_request_headers(request()))
    await asyncio.sleep(0)
    policy.futures[-1].set_exception(TimeoutError())
    r = await task
    assert isinstance(r, LocalReply) and (r.status, r.flag, r.details) == (500, "RLSE", "rate_limiter_error")
    standalone = GlobalRateLimitFilter(f.config, Budgets())  # no meshbus-policy to ask at all
    r = standalone.on_request_headers(request())
    assert isinstance(r, LocalReply) and r.status == 500


async def test_shadow_mode_counts_but_never_refuses() -> None:
    f, policy, budgets, _clock = setup(
        rate_limit("  - limit: {requests: 1, unit: Hour}\n    shadowMode: true\n")
    )
    assert await run(f, request(), policy, (1, 0)) is None
    assert f.on_request_headers(request()) is None
    assert budgets.stats["shadow_limited"] == 1 and budgets.stats["limited"] == 0


RULES = """\
  - name: per-user
    clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
    limit: {requests: 5, unit: Minute}
  - name: free-tier
    clientSelectors: [{headers: [{name: x-plan, value: free}]}]
    limit: {requests: 50, unit: Minute}
  - name: not-internal
    clientSelectors: [{headers: [{name: x-internal, value: "yes", invert: true}], sourceCIDR: {value: 10.0.0.0/8}}]
    limit: {requests: 500, unit: Minute}
  - name: per-client
    clientSelectors: [{sourceCIDR: {type: Distinct, value: 192.168.0.0/16}}]
    limit: {requests: 9, unit: Day}
"""


@pytest.mark.parametrize(
    ("headers", "ip", "keys"),
    [
        ({}, "10.0.0.9", ["default/api/2"]),
        ({"x-user": "bob"}, "10.0.0.9", ["default/api/0/bob", "default/api/2"]),
        ({"x-user": "a/b%c"}, "10.0.0.9", ["default/api/0/a%2Fb%25c", "default/api/2"]),
        ({"x-plan": "free", "x-internal": "yes"}, "10.0.0.9", ["default/api/1"]),
        ({"x-plan": "paid"}, "172.16.0.1", []),
        ({}, "192.168.3.4", ["default/api/3/192.168.3.4"]),
        ({}, "not-an-ip", []),
    ],
)
def test_selectors_pick_the_counters_a_request_counts_against(
    headers: dict[str, str], ip: str, keys: list[str]
) -> None:
    cfg = rate_limit(RULES)
    assert [k for r in cfg.rules if (k := r.key(headers, ip)) is not None] == keys
    assert [r.name for r in cfg.rules] == ["per-user", "free-tier", "not-internal", "per-client"]


async def test_a_request_counts_against_every_rule_it_matches() -> None:
    f, policy, _budgets, _clock = setup(rate_limit(RULES))
    ctx = request({"x-user": "bob"})
    task = asyncio.ensure_future(f.on_request_headers(ctx))
    await asyncio.sleep(0)
    policy.answer(1, 4)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [q.descriptor for q in policy.asked] == ["default/api/0/bob", "default/api/2"]
    policy.answer(0, 0)  # the second rule's window is used up
    r = await task
    assert isinstance(r, LocalReply) and r.status == 429
    assert dict(r.headers)["x-ratelimit-limit"] == "500, 500;w=60"
