"""Everything one proxy worker records, wired once: registry, Istio metrics, internal counters, access log.

The proxy builds one :class:`ProxyTelemetry` per worker process at startup and passes it down; with
access logging off it holds :data:`~meshbus.telemetry.accesslog.NULL_ACCESS_LOG`, so request code calls
``telemetry.access_log.log(record)`` unconditionally.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshbus.telemetry.accesslog import DEFAULT_CAPACITY, NULL_ACCESS_LOG, AccessLog, AccessLogger
from meshbus.telemetry.metrics import ISTIO_DEFAULT_BUCKETS, InternalMetrics, IstioMetrics, Registry

ACCESS_LOG_SIGNAL = "access_log"


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Per-proxy telemetry settings."""

    access_log: bool = True
    """Queue one access-log record per request (off: the null logger)."""
    access_log_capacity: int = DEFAULT_CAPACITY
    """Records held between two writer flushes; more are dropped and counted."""
    histogram_buckets: tuple[float, ...] = ISTIO_DEFAULT_BUCKETS
    """Buckets of the Istio duration/size histograms (Istio's statsHistogramBuckets override)."""


class ProxyTelemetry:
    __slots__ = ("access_log", "internal", "istio", "registry")

    def __init__(self, settings: TelemetrySettings | None = None) -> None:
        settings = settings if settings is not None else TelemetrySettings()
        self.registry = Registry()
        self.istio = IstioMetrics(self.registry, settings.histogram_buckets)
        self.internal = InternalMetrics(self.registry)
        self.access_log: AccessLog = (
            AccessLogger(
                settings.access_log_capacity,
                dropped=self.internal.telemetry_dropped.labels(ACCESS_LOG_SIGNAL),
            )
            if settings.access_log
            else NULL_ACCESS_LOG
        )
