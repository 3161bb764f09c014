"""The global rate limit filter's way to meshbus-policy: lease requests over NATS (mesh mode).

`NatsLeaseClient.lease` starts the request as a task (a future the filter and every request waiting
with it can await) with the RateLimit's timeout. "No responders" comes back at once when no
meshbus-policy runs, so a dead policy service costs a request no wait (the filter's failure mode
applies and it stops asking for a while); a hung one costs at most the timeout.
"""

from __future__ import annotations

import asyncio

from meshbus.bus import rpc
from meshbus.bus.connection import BusConnection
from meshbus.bus.schemas.ratelimit import LeaseReply, LeaseRequest
from meshbus.proxy.filters.global_ratelimit import BUDGETS, Budgets


class NatsLeaseClient:
    def __init__(self, bus: BusConnection) -> None:
        self.bus = bus
        self.subject = bus.subjects.policy("ratelimit")

    def lease(self, request: LeaseRequest, timeout: float) -> asyncio.Future[LeaseReply]:
        return asyncio.ensure_future(
            rpc.request(self.bus, self.subject, request, LeaseReply, timeout=timeout)
        )


def install(bus: BusConnection, node: str, budgets: Budgets = BUDGETS) -> None:
    """Let this process's global rate limit filters ask meshbus-policy through ``bus``."""
    budgets.client = NatsLeaseClient(bus)
    budgets.node = node
