"""Global rate limiting (meshbus.io/v1 RateLimit) in the inbound sidecar, with leased token budgets.

Design (chosen by measurement, bench/global_ratelimit.py; README "Global rate limits"): the sidecar
does not ask meshbus-policy about every request. For each descriptor (rule + the distinct values a
request carries) it holds a *lease*: tokens granted for the current window, spent locally at the cost
of a dict lookup. When they run low it asks for more in the background; when none are left it asks
and the request waits for the answer (once per lease, not per request). meshbus-policy grants from
one count per descriptor and window shared by every sidecar (control/policy/ratelimit.py), so the
sum of grants never exceeds the limit; it grants smaller leases as the window fills, so tokens left
unused in one replica while another runs dry stay few. When meshbus-policy answers that the window
is used up, the sidecar refuses locally until the window ends, without asking again.

Over the limit: 429 (flag RL) with ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and
``x-ratelimit-reset`` (Envoy's draft-03 headers). A rule in ``shadowMode`` counts and never refuses.
When meshbus-policy cannot be asked (no responders, a timeout, no bus at all on a standalone
proxy), the RateLimit's ``failureMode`` applies at once: Open lets the request pass, Closed answers
500 (flag RLSE); after a failure the sidecar does not ask again for a short backoff, so a dead
meshbus-policy costs nothing per request and never makes one wait.

Sans-IO: the lease budgets (`Budgets`, one per process: leases outlive config versions) get their
answers from a `LeaseClient` that the mesh mode installs (proxy/mesh/ratelimit_client.py, over
NATS); it returns an awaitable that many waiting requests can share.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from meshbus.bus.schemas.ratelimit import UNIT_SECONDS, LeaseReply, LeaseRequest
from meshbus.proxy.core import flags as F
from meshbus.proxy.filters.chain import BUILTIN, HOOK_REQUEST_HEADERS, FilterContext, HttpFilter, LocalReply

GLOBAL_RATELIMIT: Final = "meshbus.filters.http.ratelimit"
RLSE: Final = "RLSE"  # Envoy's flag: the rate limit service could not be asked (failure mode closed)

LEASE_FRACTION: Final = 0.1
"""A lease asks for this share of the limit (at least one token)."""
REFILL_AT: Final = 0.5
"""Ask for the next lease in the background when fewer than this share of the last one is left."""
DEFAULT_TIMEOUT: Final = 0.1
BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 5.0
MAX_ASKS: Final = 4
"""Leases one request waits for before it counts as over the limit (a crowd shares each one)."""
MAX_BUDGETS: Final = 20_000
"""Distinct descriptors held at once (per user, per client address...); the oldest windows go first."""

ALLOW, DENY, ASK = 0, 1, 2


class LeaseClient(Protocol):
    def lease(self, request: LeaseRequest, timeout: float) -> Awaitable[LeaseReply]:
        """Ask meshbus-policy for tokens; the awaitable raises when it could not be asked in time.
        It must be a future (several requests may await it; done-callbacks are added to it)."""
        ...


@dataclass(frozen=True, slots=True)
class HeaderSel:
    name: str
    distinct: bool
    value: str | None = None
    invert: bool = False


@dataclass(frozen=True, slots=True)
class CidrSel:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    distinct: bool


@dataclass(frozen=True, slots=True)
class ClientSel:
    headers: tuple[HeaderSel, ...] = ()
    cidr: CidrSel | None = None


@dataclass(frozen=True, slots=True)
class GlobalRule:
    descriptor: str
    """``<namespace>/<RateLimit name>/<rule index>``: the counter's name before distinct values."""
    requests: int
    unit: str
    selectors: tuple[ClientSel, ...] = ()
    shadow: bool = False
    name: str = ""

    @property
    def window_seconds(self) -> int:
        return UNIT_SECONDS[self.unit]

    def key(self, hdict: dict[str, str], peer_ip: str) -> str | None:
        """The counter this request counts against, or None when the rule does not apply to it."""
        parts: list[str] = []
        for sel in self.selectors:
            for h in sel.headers:
                value = hdict.get(h.name)
                if h.distinct:
                    if value is None:
                        return None
                    parts.append(value)
                elif (value == h.value) == h.invert:
                    return None
            cidr = sel.cidr
            if cidr is not None:
                try:
                    ip = ipaddress.ip_address(peer_ip)
                except ValueError:
                    return None
                if ip not in cidr.network:
                    return None
                if cidr.distinct:
                    parts.append(peer_ip)
        if not parts:
            return self.descriptor
        return self.descriptor + "/" + "/".join(p.replace("%", "%25").replace("/", "%2F") for p in parts)

    def describe(self) -> dict[str, object]:
        return {
            "descriptor": self.descriptor,
            "limit": f"{self.requests}/{self.unit}",
            "shadowMode": self.shadow,
        }


@dataclass(eq=False)
class GlobalRateLimitConfig:
    """The RateLimit rules of one workload; ``sources`` are the resources they came from."""

    rules: tuple[GlobalRule, ...]
    fail_open: bool = True
    timeout: float = DEFAULT_TIMEOUT
    sources: tuple[object, ...] = ()

    def describe(self) -> dict[str, object]:
        return {
            "rules": [r.describe() for r in self.rules],
            "failureMode": "Open" if self.fail_open else "Closed",
            "timeout": self.timeout,
        }


class Budget:
    """The tokens one sidecar holds for one descriptor."""

    __slots__ = ("exhausted", "pending", "tokens", "window", "window_end")

    def __init__(self) -> None:
        self.tokens = 0
        self.window = -1
        self.window_end = 0.0  # on this process's monotonic clock: meshbus-policy says how far off
        self.exhausted = False  # meshbus-policy said the window is used up
        self.pending: Any = None  # the lease being asked for (a future)


@dataclass
class Budgets:
    """Every lease this process holds, by descriptor key (module doc). One per process: `BUDGETS`."""

    client: LeaseClient | None = None
    node: str = ""
    clock: Callable[[], float] = time.monotonic
    by_key: dict[str, Budget] = field(default_factory=dict)
    unavailable_until: float = 0.0
    backoff: float = BACKOFF_MIN
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("allowed", "limited", "shadow_limited", "leases", "lease_failures", "failure_mode"), 0
        )
    )

    def take(self, key: str, now: float) -> int:
        """ALLOW (a token spent), DENY (the window is used up) or ASK (no token held: lease first)."""
        b = self.by_key.get(key)
        if b is None or now >= b.window_end:
            return ASK
        if b.tokens > 0:
            b.tokens -= 1
            return ALLOW
        return DENY if b.exhausted else ASK

    def budget(self, key: str) -> Budget:
        b = self.by_key.get(key)
        if b is None:
            if len(self.by_key) >= MAX_BUDGETS:
                self._evict()
            b = self.by_key[key] = Budget()
        return b

    def _evict(self) -> None:
        now = self.clock()
        stale = [k for k, b in self.by_key.items() if now >= b.window_end and b.pending is None]
        for k in stale[: max(1, len(self.by_key) // 4)]:
            del self.by_key[k]
        if len(self.by_key) >= MAX_BUDGETS:
            del self.by_key[next(iter(self.by_key))]

    def available(self, now: float) -> bool:
        return self.client is not None and now >= self.unavailable_until

    def ask(self, key: str, rule: GlobalRule, timeout: float) -> Any:
        """The pending lease for ``key`` (started now if none is): a future, or None when
        meshbus-policy cannot be asked at the moment (then the failure mode applies)."""
        b = self.budget(key)
        if b.pending is not None:
            return b.pending
        client = self.client
        if client is None or not self.available(self.clock()):
            return None
        want = max(1, math.ceil(rule.requests * LEASE_FRACTION))
        req = LeaseRequest(key, rule.requests, rule.unit, want, self.node)
        fut = client.lease(req, timeout)
        b.pending = fut
        fut.add_done_callback(lambda f: self.settle(key, f))  # type: ignore[attr-defined]
        return fut

    def settle(self, key: str, fut: Any) -> bool:
        """Apply a finished lease to its budget (once); False when it failed."""
        b = self.by_key.get(key)
        if b is None or b.pending is not fut:
            return not (fut.cancelled() or fut.exception() is not None)
        b.pending = None
        if fut.cancelled() or fut.exception() is not None:
            self.stats["lease_failures"] += 1
            self.unavailable_until = self.clock() + self.backoff
            self.backoff = min(BACKOFF_MAX, self.backoff * 2)
            return False
        reply: LeaseReply = fut.result()
        now = self.clock()
        self.backoff = BACKOFF_MIN
        self.stats["leases"] += 1
        if reply.window != b.window:
            b.tokens = 0  # tokens of an earlier window are void
            b.window = reply.window
        b.tokens += reply.granted
        b.window_end = now + reply.reset
        b.exhausted = reply.remaining <= 0
        return True

    def low(self, key: str, rule: GlobalRule) -> bool:
        """Whether to ask for the next lease in the background (tokens running low)."""
        b = self.by_key.get(key)
        if b is None or b.exhausted or b.pending is not None:
            return False
        return b.tokens < max(1.0, rule.requests * LEASE_FRACTION * REFILL_AT)

    def reset_in(self, key: str, now: float) -> int:
        b = self.by_key.get(key)
        return max(0, math.ceil(b.window_end - now)) if b is not None else 0


BUDGETS: Final = Budgets()
"""The process's leases; proxy/mesh/mode.py installs the NATS client (``BUDGETS.client``)."""


def _limited(rule: GlobalRule, reset: int) -> LocalReply:
    headers = (
        ("x-ratelimit-limit", f"{rule.requests}, {rule.requests};w={rule.window_seconds}"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", str(reset)),
    )
    return LocalReply(429, "", headers, flag=F.RL, details="request_rate_limited")


_UNAVAILABLE: Final = LocalReply(
    500, "rate limit service unavailable\n", (), flag=RLSE, details="rate_limiter_error"
)


class GlobalRateLimitFilter(HttpFilter):
    """Applies the workload's RateLimit rules with leased budgets (module doc)."""

    def __init__(self, config: GlobalRateLimitConfig, budgets: Budgets | None = None) -> None:
        # After authorization and local rate limiting: a request refused there costs no global token.
        super().__init__(GLOBAL_RATELIMIT, BUILTIN, 20, HOOK_REQUEST_HEADERS)
        self.config = config
        self.budgets = budgets if budgets is not None else BUDGETS

    def on_request_headers(self, ctx: FilterContext) -> Any:
        return self._check(ctx, 0)

    def _check(self, ctx: FilterContext, start: int) -> Any:
        budgets = self.budgets
        hdict = ctx.head.hdict
        peer = ctx.dc.peer_ip
        rules = self.config.rules
        now = budgets.clock()
        for i in range(start, len(rules)):
            rule = rules[i]
            key = rule.key(hdict, peer)
            if key is None:
                continue
            verdict = budgets.take(key, now)
            if verdict == ALLOW:
                if budgets.low(key, rule):
                    budgets.ask(key, rule, self.config.timeout)  # in the background
                continue
            if verdict == DENY:
                reply = self._deny(rule, budgets.reset_in(key, now))
                if reply is None:
                    continue
                return reply
            fut = budgets.ask(key, rule, self.config.timeout)
            if fut is None:
                reply = self._failure()
                if reply is None:
                    continue
                return reply
            return self._wait(ctx, i, key, fut)
        budgets.stats["allowed"] += 1
        return None

    async def _wait(self, ctx: FilterContext, i: int, key: str, fut: Any) -> Any:
        budgets = self.budgets
        rule = self.config.rules[i]
        for _ in range(MAX_ASKS):
            try:
                await fut
            except Exception:
                pass  # settle() notes the failure; the failure mode applies below
            if not budgets.settle(key, fut):
                reply = self._failure()
                break
            verdict = budgets.take(key, budgets.clock())
            if verdict == ALLOW:
                reply = None
                break
            if verdict == DENY:
                reply = self._deny(rule, budgets.reset_in(key, budgets.clock()))
                break
            # Others waiting with this request took what came, and the window is not used up: again.
            fut = budgets.ask(key, rule, self.config.timeout)
            if fut is None:
                reply = self._failure()
                break
        else:
            reply = self._deny(rule, budgets.reset_in(key, budgets.clock()))
        if reply is not None:
            return reply
        rest = self._check(ctx, i + 1)
        if rest is not None and not isinstance(rest, LocalReply):
            return await rest  # another rule needs a lease too
        return rest

    def _deny(self, rule: GlobalRule, reset: int) -> LocalReply | None:
        if rule.shadow:
            self.budgets.stats["shadow_limited"] += 1
            return None
        self.budgets.stats["limited"] += 1
        return _limited(rule, reset)

    def _failure(self) -> LocalReply | None:
        self.budgets.stats["failure_mode"] += 1
        return None if self.config.fail_open else _UNAVAILABLE
