"""Local rate limiting: a token bucket per route (meshbus.io/v1 LocalRateLimit), like Envoy's.

The bucket starts full; every ``fill_interval`` seconds ``tokens_per_fill`` tokens are added, up
to ``max_tokens``. Refill happens lazily in ``try_acquire`` from the injected clock, so no timer is
needed and tests never sleep.
"""

from __future__ import annotations


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
