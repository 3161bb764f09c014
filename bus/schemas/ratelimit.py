"""Global rate limiting: token leases between proxies and meshbus-policy.

A proxy enforcing a ``meshbus.io/v1 RateLimit`` rule does not ask meshbus-policy about every
request: it asks for a *lease* of tokens for one descriptor (rule + the distinct values the request
carries) in the current window, spends them locally, and asks again when they run low
(proxy/filters/global_ratelimit.py). meshbus-policy counts what it granted per descriptor and
window in a KV bucket with compare-and-set (control/policy/ratelimit.py), so every replica of the
limited service and every meshbus-policy replica draws from one count and the sum of grants never
exceeds the limit. Subject: ``Subjects.policy("ratelimit")`` (queue group).

A lease of ``hits=1`` spent at once is the per-request check of Envoy's rate limit service
(``ShouldRateLimit``); bench/global_ratelimit.py measures both designs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codec import message

RATELIMIT_BUCKET = "ratelimit"
"""Counters bucket under the subject root (``Subjects.kv_bucket``)."""

UNIT_SECONDS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400}


@message("meshbus.policy.v1.LeaseRequest")
@dataclass(frozen=True, slots=True)
class LeaseRequest:
    descriptor: str
    """``<namespace>/<RateLimit name>/<rule index>`` then ``/<value>`` per distinct selector."""
    requests: int
    """The rule's limit per unit (the proxy sends it, so meshbus-policy needs no config)."""
    unit: str
    """Second, Minute, Hour or Day."""
    hits: int = 1
    """Tokens wanted; meshbus-policy may grant fewer (never more than is left in the window)."""
    node: str = ""
    """The asking proxy, for logs."""


@message("meshbus.policy.v1.LeaseReply")
@dataclass(frozen=True, slots=True)
class LeaseReply:
    granted: int
    """Tokens the proxy may spend until the window ends."""
    remaining: int
    """Tokens left in the window after this grant (for ``x-ratelimit-remaining``)."""
    reset: float
    """Seconds until the window ends (the lease ends with it)."""
    window: int = 0
    """Index of the window (Unix time // unit seconds)."""
