from __future__ import annotations

import pytest

from meshbus.telemetry.accesslog import NULL_ACCESS_LOG, AccessLogger, AccessLogRecord
from meshbus.telemetry.exposition import render_prometheus
from meshbus.telemetry.metrics import istio_static_labels
from meshbus.telemetry.proxy_telemetry import ProxyTelemetry, TelemetrySettings

pytestmark = pytest.mark.unit


def test_default_wiring_counts_access_log_drops_in_the_registry() -> None:
    t = ProxyTelemetry(TelemetrySettings(access_log_capacity=1))
    assert isinstance(t.access_log, AccessLogger)
    t.access_log.log(AccessLogRecord(0.0))
    t.access_log.log(AccessLogRecord(0.0))
    assert 'meshbus_telemetry_dropped_total{signal="access_log"} 1\n' in render_prometheus(t.registry)


def test_access_log_off_uses_the_null_logger_and_custom_buckets_apply() -> None:
    t = ProxyTelemetry(TelemetrySettings(access_log=False, histogram_buckets=(1.0, 10.0)))
    assert t.access_log is NULL_ACCESS_LOG
    t.istio.series(istio_static_labels(reporter="source")).record(200, 5, 0, 0)
    text = render_prometheus(t.registry)
    assert 'response_flags="-",le="10"} 1\n' in text
    assert 'le="0.5"' not in text
