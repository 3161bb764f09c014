"""Retry decisions with Istio's defaults and Envoy's ``retry_on`` meanings.

Istio (pilot/pkg/networking/core/route/retry/retry.go): with no ``retries`` on a route the policy is
2 retries on ``connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`` with
retriable status 503; ``attempts: 0`` disables retries; a ``retryOn`` given by the user replaces the
default list, and bare numbers in it are retriable status codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from meshbus.bus.config.virtual_service import HTTPRetry

# Envoy router_filter.rst: "5xx" also covers connect-failure and refused-stream (and resets); a reset
# counts as a 5xx for "gateway-error" too, since the router answers it with one.
_ERROR_POLICIES: Final = {
    "connect-failure": frozenset({"5xx", "gateway-error", "reset", "connect-failure"}),
    "refused-stream": frozenset({"5xx", "gateway-error", "reset", "refused-stream"}),
    "reset": frozenset({"5xx", "gateway-error", "reset"}),
    "timeout": frozenset({"5xx", "gateway-error", "reset"}),  # per-try timeout
}
_GRPC_CODES: Final = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}
DEFAULT_RETRY_ON: Final = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
BACKOFF_BASE: Final = 0.025


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # retries after the first try (1 + attempts requests at most)
    per_try_timeout: float | None = None
    retry_on: frozenset[str] = frozenset()
    retriable_status_codes: frozenset[int] = frozenset()
    backoff_base: float = BACKOFF_BASE
    backoff_max: float = BACKOFF_BASE * 10

    def retry_on_status(self, code: int) -> bool:
        """Whether a response with this status should be retried (before attempts run out)."""
        if self.attempts <= 0:
            return False
        ro = self.retry_on
        if code >= 500 and "5xx" in ro:
            return True
        if code in (502, 503, 504) and "gateway-error" in ro:
            return True
        if code == 409 and "retriable-4xx" in ro:
            return True
        return code in self.retriable_status_codes and "retriable-status-codes" in ro

    def retry_on_error(self, kind: str) -> bool:
        """kind: "connect-failure", "reset", "refused-stream" or "timeout" (per-try timeout)."""
        if self.attempts <= 0:
            return False
        policies = _ERROR_POLICIES.get(kind)
        return policies is not None and not policies.isdisjoint(self.retry_on)

    def retry_on_grpc(self, status: int) -> bool:
        """gRPC status from grpc-status: cancelled/deadline-exceeded/internal/resource-exhausted/unavailable."""
        if self.attempts <= 0:
            return False
        return any(_GRPC_CODES.get(p) == status for p in self.retry_on)

    def backoff(self, attempt: int, rand: float) -> float:
        """Delay before retry number ``attempt`` (1-based): Envoy's fully jittered exponential backoff.

        Envoy: interval = base * (2^attempt - 1), capped at max; the delay is uniform in [0, interval).
        """
        n = max(attempt, 1)
        ceiling = min(self.backoff_base * ((1 << min(n, 30)) - 1), self.backoff_max)
        return rand * ceiling

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"attempts": self.attempts, "retryOn": ",".join(sorted(self.retry_on))}
        if self.retriable_status_codes:
            out["retriableStatusCodes"] = sorted(self.retriable_status_codes)
        if self.per_try_timeout is not None:
            out["perTryTimeout"] = self.per_try_timeout
        return out


NO_RETRY: Final = RetryPolicy(attempts=0)


def parse_retry_on(text: str) -> tuple[frozenset[str], frozenset[int]]:
    """``"5xx,503,reset"`` -> ({"5xx","reset","retriable-status-codes"}, {503}), as Istio's parseRetryOn."""
    policies: set[str] = set()
    codes: set[int] = set()
    for part in text.split(","):
        p = part.strip()
        if not p:
            continue
        if p.isascii() and p.isdigit() and 100 <= int(p) <= 599:
            codes.add(int(p))
        else:
            policies.add(p)
    if codes:
        policies.add("retriable-status-codes")
    return frozenset(policies), frozenset(codes)


def default_retry_policy() -> RetryPolicy:
    policies, _ = parse_retry_on(DEFAULT_RETRY_ON)
    return RetryPolicy(attempts=2, retry_on=policies, retriable_status_codes=frozenset({503}))


DEFAULT_RETRY: Final = default_retry_policy()


def retry_policy_from(spec: HTTPRetry | None) -> RetryPolicy:
    """Istio HTTPRetry (or None) -> RetryPolicy, following retry.ConvertPolicy."""
    if spec is None:
        return DEFAULT_RETRY
    attempts = spec.attempts or 0
    if attempts <= 0:
        return NO_RETRY
    retry_on, codes = DEFAULT_RETRY.retry_on, DEFAULT_RETRY.retriable_status_codes
    text = spec.retry_on
    if text:
        retry_on, codes = parse_retry_on(text)
    base, cap = BACKOFF_BASE, BACKOFF_BASE * 10
    backoff = spec.backoff
    if backoff is not None:
        if backoff.base_interval:
            base = backoff.base_interval
            cap = base * 10
        if backoff.max_interval:
            cap = backoff.max_interval
    return RetryPolicy(
        attempts=attempts,
        per_try_timeout=spec.per_try_timeout,
        retry_on=retry_on,
        retriable_status_codes=codes,
        backoff_base=base,
        backoff_max=cap,
    )
