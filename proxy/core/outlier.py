"""Outlier detection (passive health checking) as Envoy runs it for an Istio ``outlierDetection``.

- Consecutive-error ejection happens inline, when a result arrives: ``consecutive5xxErrors``
  (default 5; 0 disables) and ``consecutiveGatewayErrors`` (502/503/504; off unless set).
  Locally originated failures count as the 5xx the router would answer (connect failure, reset:
  503; timeout: 504), as Envoy does without ``splitExternalLocalOriginErrors``.
- An ejection lasts ``baseEjectionTime`` x times ejected (capped at max(300s, base)).
- ``maxEjectionPercent`` (default 10): Envoy ejects only while (ejected + 1) / hosts <= max%, so
  with the default no host of a cluster of fewer than 10 is ever ejected (Envoy 1.31+, without
  ``always_eject_one_host``, which Istio does not set).
- ``minHealthPercent`` (default 0) is Envoy's panic threshold: below it, traffic goes to all hosts.
- Hosts come back when their time is up, checked by ``Cluster.tick`` every ``interval``; the load
  balancer also ignores an expired ejection, so a late tick never keeps a host out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.core.endpoint import Endpoint

if TYPE_CHECKING:
    from meshbus.bus.config.destination_rule import OutlierDetection

MAX_EJECTION_TIME: Final = 300.0
_ERROR_CODES: Final = {"connect-failure": 503, "reset": 503, "refused-stream": 503, "timeout": 504}


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "consecutive5xxErrors": self.consecutive_5xx,
            "consecutiveGatewayErrors": self.consecutive_gateway,
            "interval": self.interval,
            "baseEjectionTime": self.base_ejection_time,
            "maxEjectionPercent": self.max_ejection_percent,
            "minHealthPercent": self.min_health_percent,
        }


def outlier_settings_from(spec: OutlierDetection | None) -> OutlierSettings | None:
    """Istio OutlierDetection -> settings; None when the DestinationRule sets none (no detection)."""
    if spec is None:
        return None
    c5 = spec.consecutive_5xx_errors
    if c5 is None:
        legacy = spec.consecutive_errors  # deprecated: counted gateway errors only
        c5 = 5 if legacy is None else 0
        gw_default = legacy or 0
    else:
        gw_default = 0
    gw = spec.consecutive_gateway_errors
    return OutlierSettings(
        consecutive_5xx=c5,
        consecutive_gateway=gw if gw is not None else gw_default,
        interval=spec.interval if spec.interval is not None else 10.0,
        base_ejection_time=spec.base_ejection_time if spec.base_ejection_time is not None else 30.0,
        max_ejection_percent=spec.max_ejection_percent if spec.max_ejection_percent is not None else 10,
        min_health_percent=spec.min_health_percent or 0,
    )


def result_code(status: int | None, error: str | None) -> int | None:
    if status is not None:
        return status
    if error is not None:
        return _ERROR_CODES.get(error, 503)
    return None


def record(
    settings: OutlierSettings, endpoints: Sequence[Endpoint], ep: Endpoint, code: int, now: float
) -> bool:
    """Count one result for ``ep``; return True when it got ejected."""
    if ep.ejected_until > now:
        return False
    if code < 500:
        ep.consecutive_5xx = 0
        ep.consecutive_gateway = 0
        return False
    if 502 <= code <= 504:
        ep.consecutive_gateway += 1
    else:
        ep.consecutive_gateway = 0
    ep.consecutive_5xx += 1
    trip = (settings.consecutive_5xx > 0 and ep.consecutive_5xx >= settings.consecutive_5xx) or (
        settings.consecutive_gateway > 0 and ep.consecutive_gateway >= settings.consecutive_gateway
    )
    if not trip:
        return False
    # Envoy resets the counters after an ejection attempt, ejected or not, so the next bout counts afresh.
    ep.consecutive_5xx = 0
    ep.consecutive_gateway = 0
    active = sum(1 for e in endpoints if e.ejected_until > now)
    if 100.0 * (active + 1) / len(endpoints) > settings.max_ejection_percent:
        return False
    ep.times_ejected += 1
    duration = min(
        settings.base_ejection_time * ep.times_ejected, max(MAX_EJECTION_TIME, settings.base_ejection_time)
    )
    ep.ejected_until = now + duration
    return True


def restore_expired(endpoints: Sequence[Endpoint], now: float) -> int:
    """Un-eject hosts whose time is up; return how many remain ejected."""
    still = 0
    for e in endpoints:
        if e.ejected_until:
            if e.ejected_until <= now:
                e.ejected_until = 0.0
            else:
                still += 1
    return still
