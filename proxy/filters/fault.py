"""Fault injection decisions (Istio HTTPFaultInjection, Envoy fault filter).

The fault filter runs before the router, so an injected delay is not counted against the route
timeout and an injected abort is a local reply that is never retried; requests the fault lets
through keep the route's timeout and retries (Istio's route.go keeps both on faulted routes).
A delay or abort without a percentage applies to no request, as in Envoy (percentage defaults to 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.core import flags as F
from meshbus.proxy.filters.chain import (
    BUILTIN,
    HOOK_REQUEST_HEADERS,
    Delay,
    FilterContext,
    HttpFilter,
    LocalReply,
)

if TYPE_CHECKING:
    from meshbus.bus.config.virtual_service import FaultAbort, FaultDelay, HTTPFaultInjection


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    delay: float | None = None  # seconds
    delay_percent: float = 0.0
    abort_status: int | None = None
    abort_percent: float = 0.0

    def decide(self, rand_delay: float, rand_abort: float) -> tuple[float | None, int | None]:
        """(delay seconds or None, abort status or None); rand_* uniform in [0, 1).

        When both fire, the delay happens first and then the abort is answered (Envoy order).
        """
        d = self.delay if self.delay is not None and rand_delay * 100.0 < self.delay_percent else None
        a = (
            self.abort_status
            if self.abort_status is not None and rand_abort * 100.0 < self.abort_percent
            else None
        )
        return d, a

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.delay is not None:
            out["delay"] = {"fixedDelay": self.delay, "percentage": self.delay_percent}
        if self.abort_status is not None:
            out["abort"] = {"httpStatus": self.abort_status, "percentage": self.abort_percent}
        return out


def _percent(fault: FaultDelay | FaultAbort | None) -> float:
    # The model has already copied a deprecated int ``percent`` into ``percentage``.
    pct = fault.percentage if fault is not None else None
    return float(pct.value) if pct is not None else 0.0


def fault_policy_from(spec: HTTPFaultInjection | None) -> FaultPolicy | None:
    if spec is None:
        return None
    delay, abort = spec.delay, spec.abort
    d = delay.fixed_delay if delay is not None else None
    a = abort.http_status if abort is not None else None
    if d is None and a is None:
        return None
    return FaultPolicy(
        delay=d,
        delay_percent=_percent(delay) if d is not None else 0.0,
        abort_status=a,
        abort_percent=_percent(abort) if a is not None else 0.0,
    )


FAULT: Final = "meshbus.filters.http.fault"
_rand: Final = random.random


class FaultFilter(HttpFilter):
    """Delays (flag DI) and aborts (flag FI) a percentage of requests, before the router."""

    def __init__(self, policy: FaultPolicy) -> None:
        super().__init__(FAULT, BUILTIN, 10, HOOK_REQUEST_HEADERS)
        self.policy = policy
        status = policy.abort_status
        self.abort = None if status is None else LocalReply(status, "fault filter abort\n", flag=F.FI)

    def on_request_headers(self, ctx: FilterContext) -> Any:
        delay, abort = self.policy.decide(_rand(), _rand())
        if delay:
            ctx.flags.append(F.DI)
            return Delay(delay, self.abort if abort else None)
        if abort:
            return self.abort
        return None
