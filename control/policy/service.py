"""meshbus-policy on the bus: the ``ratelimit`` lease endpoint, the ``meshbusAuthz`` authorizers of its
``--authz-rules`` file (authz_rules.py), and the key-set resolver beside them.

`PolicyService` owns one `BusService` ("policy": ``$SRV`` discovery, health, the ``q`` queue group so
replicas share the load) with the ``ratelimit`` endpoint (`ratelimit.Counters`), and runs the
`JwksResolver`. Ready once the counters bucket is open; the resolver works in the background (a
replica that cannot reach an identity provider still grants leases).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from meshbus.bus.connection import BusConnection
from meshbus.bus.schemas.authz import AuthzCheck, AuthzDecision
from meshbus.bus.schemas.ratelimit import LeaseReply, LeaseRequest
from meshbus.bus.service import BusService, EndpointSpec

from .authz_rules import Authorizer, AuthzRules
from .jwks import JwksPolicy
from .jwks_fetch import fetch
from .jwks_resolver import Fetcher, JwksResolver
from .ratelimit import Counters, counters_bucket

log = logging.getLogger(__name__)


class PolicyService:
    """One meshbus-policy replica. ``async with PolicyService(...)`` starts and stops it."""

    def __init__(
        self,
        bus: BusConnection,
        jwks_policy: JwksPolicy | None = None,
        *,
        fetcher: Fetcher = fetch,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        authz_rules: AuthzRules | None = None,
    ) -> None:
        self.bus = bus
        self._log = logger or log
        self.counters = Counters(counters_bucket(bus), clock=clock)
        self.resolver = JwksResolver(bus, jwks_policy, fetcher=fetcher, clock=clock, logger=self._log)
        self.service = BusService(
            bus, "policy", description="meshbus policy: global rate limits, JWT key sets"
        )
        self.service.add_endpoint(
            EndpointSpec("ratelimit", LeaseRequest, self.lease, subject=bus.subjects.policy("ratelimit"))
        )
        for authorizer in authz_rules.authorizers if authz_rules is not None else ():
            self.service.add_endpoint(
                EndpointSpec(
                    f"authz-{authorizer.name}",
                    AuthzCheck,
                    self._authorizer(authorizer),
                    subject=bus.subjects.authz(authorizer.name),
                )
            )

    def _authorizer(self, authorizer: Authorizer) -> Callable[[AuthzCheck], Awaitable[AuthzDecision]]:
        async def check(req: AuthzCheck) -> AuthzDecision:
            return authorizer.decide(req)

        return check

    async def lease(self, req: LeaseRequest) -> LeaseReply:
        return await self.counters.lease(req)

    async def start(self) -> None:
        await self.counters.kv.open()
        await self.service.start()
        await self.resolver.start()
        self.service.set_ready()

    async def stop(self) -> None:
        await self.resolver.stop()
        await self.service.stop()

    async def __aenter__(self) -> PolicyService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
