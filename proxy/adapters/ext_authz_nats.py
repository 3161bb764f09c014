"""The ``meshbusAuthz`` provider: a CUSTOM check as a NATS request to a meshbus authorizer.

The check (bus/schemas/authz.py `AuthzCheck`: method, normalized path, host, the headers as received,
the body when the provider asks for it, the caller's address and SPIFFE ID) goes to
``<root>.v1.authz.<subject>`` over the proxy's bus connection (the agent's in mesh mode; a standalone
proxy connects to ``--nats`` on first need), with the provider's timeout. The `AuthzDecision` maps
onto the filter's generic result: allowed -> OK (``upstream_headers`` set, ``remove_headers`` dropped,
``headers`` added to the response); denied -> the client gets its status, headers and body. No
responders, a timeout, a lost connection or a reply that does not decode -> ERROR, which the filter
turns into the provider's failOpen or statusOnError. Registered under ``meshbusAuthz`` in
filters/authz_providers.py when this module is imported (adapters/server.py imports it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from meshbus.bus.config.authz.compile import ProviderSpec
from meshbus.bus.config.mesh_config import MeshbusAuthz
from meshbus.bus.schemas.authz import AuthzCheck, AuthzDecision
from meshbus.proxy.filters import authz_providers as P

KIND: Final = "meshbusAuthz"


def _pairs(items: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(n).lower(), str(v)) for n, v in items)


class NatsAuthzClient:
    """One provider's client in one proxy worker (made once, on the first check)."""

    def __init__(self, spec: ProviderSpec, server: Any) -> None:
        cfg = spec.config
        if not isinstance(cfg, MeshbusAuthz):
            raise TypeError(f"meshbus: {KIND} client given {type(cfg).__name__} config")
        self.spec = spec
        self.server = server
        self.name = cfg.subject

    def body_waiter(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.server.loop.create_future()
        return future

    async def check(self, request: P.CheckInput) -> P.CheckResult:
        # Imported on the first check: workers without a meshbusAuthz provider never load the NATS client.
        from meshbus.bus import rpc
        from meshbus.bus.errors import BusError

        spec = self.spec
        bus = self.server.call_bus()
        msg = AuthzCheck(
            request.method,
            request.path,
            request.host,
            [[n, v] for n, v in request.headers],
            request.body or b"",
            request.partial,
            request.source_ip,
            request.principal,
            spec.name,
        )
        try:
            deadline = time.monotonic() + spec.timeout
            if not bus.connected:  # a standalone proxy's bus connects on first need
                await bus.wait_connected(spec.timeout)
            subject = bus.subjects.authz(self.name)
            left = max(deadline - time.monotonic(), 0.001)
            d = await rpc.request(bus, subject, msg, AuthzDecision, timeout=left)
        except (TimeoutError, BusError) as exc:  # no responders, timeout, bad reply, closed
            return P.CheckResult(P.ERROR, reason=f"{KIND} {self.name}: {exc}")
        except Exception as exc:  # not connected yet, or refused by the bus's permissions
            return P.CheckResult(P.ERROR, reason=f"{KIND} {self.name}: {type(exc).__name__}: {exc}")
        if d.allowed:
            return P.CheckResult(
                P.OK,
                200,
                upstream_set=_pairs(d.upstream_headers),
                upstream_remove=frozenset(n.lower() for n in d.remove_headers),
                downstream=_pairs(d.headers),
                reason=d.reason,
            )
        status = d.status if 200 <= d.status <= 599 else 403
        return P.CheckResult(P.DENIED, status, headers=_pairs(d.headers), body=d.body, reason=d.reason)


P.register(KIND, NatsAuthzClient)
