"""Circuit breaker counters for one cluster (Envoy's per-cluster resource limits, Istio connectionPool).

Istio maps ``tcp.maxConnections`` -> max_connections, ``http.http1MaxPendingRequests`` ->
max_pending_requests, ``http.http2MaxRequests`` -> max_requests and ``http.maxRetries`` ->
max_retries, each defaulting to 2^32-1 (Istio raises Envoy's 1024 defaults). Going over a limit is
counted as an overflow and answered 503 UO by the adapter; nothing waits unboundedly.

The retry counters are Envoy's cluster stats (``upstream_rq_retry``, ``_success``, ``_overflow``,
``_limit_exceeded``), kept here because they share the breaker's life: per cluster, carried across
config swaps. core/attempts.py takes and gives back the retry slots and counts them.
"""

from __future__ import annotations

from typing import Any, Final

UNLIMITED: Final = 2**32 - 1


class CircuitBreaker:
    __slots__ = (
        "active_requests",
        "active_retries",
        "connections",
        "cx_overflow",
        "max_connections",
        "max_pending",
        "max_requests",
        "max_retries",
        "pending",
        "pending_overflow",
        "retries",
        "retry_limit_exceeded",
        "retry_overflow",
        "retry_success",
        "rq_overflow",
    )

    def __init__(
        self,
        max_connections: int = UNLIMITED,
        max_pending: int = UNLIMITED,
        max_requests: int = UNLIMITED,
        max_retries: int = UNLIMITED,
    ) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_requests = max_requests
        self.max_retries = max_retries
        self.active_requests = 0
        self.pending = 0
        self.active_retries = 0
        self.connections = 0
        self.rq_overflow = 0
        self.pending_overflow = 0
        self.retry_overflow = 0
        self.cx_overflow = 0
        self.retries = 0  # retries made (Envoy upstream_rq_retry)
        self.retry_success = 0  # retried requests whose retry was not retried again
        self.retry_limit_exceeded = 0  # failures the policy would retry, with no retries left

    def set_limits(self, other: CircuitBreaker) -> None:
        """Take new limits from a fresh config, keeping the live counters."""
        self.max_connections = other.max_connections
        self.max_pending = other.max_pending
        self.max_requests = other.max_requests
        self.max_retries = other.max_retries

    def try_start_request(self) -> bool:
        if self.active_requests >= self.max_requests:
            self.rq_overflow += 1
            return False
        self.active_requests += 1
        return True

    def end_request(self) -> None:
        if self.active_requests > 0:
            self.active_requests -= 1

    def try_enqueue_pending(self) -> bool:
        if self.pending >= self.max_pending:
            self.pending_overflow += 1
            return False
        self.pending += 1
        return True

    def dequeue_pending(self) -> None:
        if self.pending > 0:
            self.pending -= 1

    def try_start_retry(self) -> bool:
        if self.active_retries >= self.max_retries:
            self.retry_overflow += 1
            return False
        self.active_retries += 1
        return True

    def end_retry(self) -> None:
        if self.active_retries > 0:
            self.active_retries -= 1

    def try_open_connection(self) -> bool:
        if self.connections >= self.max_connections:
            self.cx_overflow += 1
            return False
        self.connections += 1
        return True

    def connection_closed(self) -> None:
        if self.connections > 0:
            self.connections -= 1

    def describe(self) -> dict[str, Any]:
        return {
            "limits": {
                "maxConnections": self.max_connections,
                "maxPendingRequests": self.max_pending,
                "maxRequests": self.max_requests,
                "maxRetries": self.max_retries,
            },
            "activeRequests": self.active_requests,
            "pendingRequests": self.pending,
            "activeRetries": self.active_retries,
            "connections": self.connections,
            "overflow": {
                "requests": self.rq_overflow,
                "pending": self.pending_overflow,
                "retries": self.retry_overflow,
                "connections": self.cx_overflow,
            },
            "retries": {
                "total": self.retries,
                "success": self.retry_success,
                "overflow": self.retry_overflow,
                "limitExceeded": self.retry_limit_exceeded,
            },
        }
