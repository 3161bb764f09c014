"""Upstream endpoints: address, labels and the mutable health state that outlives config swaps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Endpoint:
    """One upstream host of a cluster; identity is (address, port).

    ``active_requests`` is maintained by the adapter (+1 when a request is sent, -1 when it ends);
    the rest is maintained by ``Cluster.record_result`` / ``Cluster.tick`` (outlier detection).
    """

    __slots__ = (
        "active_requests",
        "address",
        "consecutive_5xx",
        "consecutive_gateway",
        "ejected_until",
        "key",
        "labels",
        "port",
        "times_ejected",
    )

    def __init__(self, address: str, port: int, labels: Mapping[str, str] | None = None) -> None:
        self.address = address
        self.port = port
        self.key = (address, port)  # identity (pools, state carry-over); address and port never change
        self.labels: Mapping[str, str] = dict(labels or {})
        self.active_requests = 0
        self.ejected_until = 0.0  # 0 = not ejected; else monotonic time the ejection ends
        self.times_ejected = 0
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "labels": dict(self.labels),
            "healthy": not self.ejected(now),
            "ejectedFor": round(max(0.0, self.ejected_until - now), 3),
            "timesEjected": self.times_ejected,
            "activeRequests": self.active_requests,
        }

    def __repr__(self) -> str:
        return f"Endpoint({self.address}:{self.port})"
