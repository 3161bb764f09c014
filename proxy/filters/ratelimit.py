"""Local rate limiting: a token bucket per route (meshbus.io/v1 LocalRateLimit), like Envoy's.

The bucket starts full; every ``fill_interval`` seconds ``tokens_per_fill`` tokens are added, up
to ``max_tokens``. Refill happens lazily in ``try_acquire`` from the injected clock, so no timer is
needed and tests never sleep.
"""

from __future__ import annotations

from typing import Any, Final

from meshbus.proxy.core import flags as F
from meshbus.proxy.filters.chain import BUILTIN, HOOK_REQUEST_HEADERS, FilterContext, HttpFilter, LocalReply


class TokenBucket:
    __slots__ = ("_last_fill", "fill_interval", "max_tokens", "tokens", "tokens_per_fill")

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval: float) -> None:
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval = fill_interval
        self.tokens = max_tokens
        self._last_fill: float | None = None

    def try_acquire(self, now: float) -> bool:
        """Take a token if one is available at time ``now`` (monotonic seconds)."""
        last = self._last_fill
        if last is None:
            self._last_fill = now
        elif now - last >= self.fill_interval:
            fills = int((now - last) // self.fill_interval)
            self.tokens = min(self.max_tokens, self.tokens + fills * self.tokens_per_fill)
            self._last_fill = last + fills * self.fill_interval
        if self.tokens > 0:
            self.tokens -= 1
            return True
        return False

    def describe(self) -> dict[str, object]:
        return {
            "maxTokens": self.max_tokens,
            "tokensPerFill": self.tokens_per_fill,
            "fillInterval": self.fill_interval,
            "tokens": self.tokens,
        }


LOCAL_RATELIMIT: Final = "meshbus.filters.http.local_ratelimit"
_LIMITED: Final = LocalReply(*F.LOCAL_REPLIES[F.RL], flag=F.RL, details="local_rate_limited")


class LocalRateLimitFilter(HttpFilter):
    """Answers 429 (flag RL) when the route's bucket is empty; the bucket lives as long as the config."""

    def __init__(self, bucket: TokenBucket) -> None:
        super().__init__(LOCAL_RATELIMIT, BUILTIN, 30, HOOK_REQUEST_HEADERS)
        self.bucket = bucket

    def on_request_headers(self, ctx: FilterContext) -> Any:
        if self.bucket.try_acquire(ctx.t0):
            return None
        return _LIMITED
