"""Typed errors for meshbus.telemetry (STYLE.md E8): one root, a stable ``code``, a "meshbus: " prefix."""

from __future__ import annotations


class TelemetryError(Exception):
    """Root of every error raised by meshbus.telemetry."""

    code = "telemetry_error"

    def __init__(self, message: str) -> None:
        super().__init__(f"meshbus: {message}")


class MetricDefinitionError(TelemetryError, ValueError):
    """A metric was declared twice, with a bad name, bad labels or bad buckets."""

    code = "metric_definition"


class LabelError(TelemetryError, ValueError):
    """Label values do not match the metric's declared label names."""

    code = "metric_labels"


class ConfigError(TelemetryError, ValueError):
    """A telemetry component was configured with an invalid value."""

    code = "telemetry_config"
