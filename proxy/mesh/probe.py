"""The sidecar's readiness probe of its own app, as a Kubernetes readiness probe: what, and the verdict.

``--app-health http:/healthz`` (GET on the app port; any status 200-399 passes, as the kubelet
counts it), ``http:8081/ready`` (another port), ``tcp`` / ``tcp:8081`` (a connect is enough). The
timing flags are the probe's fields: ``periodSeconds``, ``timeoutSeconds``, ``successThreshold``,
``failureThreshold``. The defaults differ from Kubernetes' (10 s period) because a workload must
leave the endpoint sets within a few seconds: probe each second, 1 s timeout, unhealthy after 3
failures in a row, healthy again after 1 success.

`ProbeTracker` turns results into the state: ``UNKNOWN`` until the first verdict (not ready: the
kubelet too keeps a container unready until its first success), ``HEALTHY`` after
``success_threshold`` successes in a row, ``UNHEALTHY`` after ``failure_threshold`` failures in a
row; one odd result in between changes nothing. Sans-IO: the probing itself is
`meshbus.proxy.mesh.prober`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from meshbus.bus.schemas.discovery import APP_HEALTHY, APP_UNHEALTHY, APP_UNKNOWN

_SPEC = re.compile(r"^(?P<kind>http|tcp)(?::(?P<port>\d{1,5})?(?P<path>/\S*)?)?$")


class ProbeSpecError(ValueError):
    """A bad ``--app-health*`` value; the message names the flag."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    kind: str
    """``http`` or ``tcp``."""
    port: int
    path: str = "/"
    """HTTP only."""
    period_s: float = 1.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    def __post_init__(self) -> None:
        if self.kind not in ("http", "tcp"):
            raise ProbeSpecError(
                f"meshbus: --app-health: unknown probe {self.kind!r} (use http:/PATH or tcp)"
            )
        if not 0 < self.port <= 65535:
            raise ProbeSpecError(f"meshbus: --app-health: port {self.port} is out of range")
        if self.period_s <= 0 or self.timeout_s <= 0:
            raise ProbeSpecError("meshbus: --app-health-period and --app-health-timeout must be positive")
        if self.success_threshold < 1 or self.failure_threshold < 1:
            raise ProbeSpecError("meshbus: --app-health-success/failure-threshold must be at least 1")

    def describe(self) -> str:
        """``GET :9080/healthz`` or ``TCP :9080``, for reasons and logs."""
        return f"GET :{self.port}{self.path}" if self.kind == "http" else f"TCP :{self.port}"


def parse_probe(text: str, app_port: int | None, **timing: Any) -> ProbeSpec:
    """``http:/healthz``, ``http:8081/healthz``, ``tcp``, ``tcp:8081`` -> spec (port: the app's)."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise ProbeSpecError(
            f"meshbus: --app-health {text!r}: use http:/PATH, http:PORT/PATH, tcp or tcp:PORT"
        )
    kind = m.group("kind")
    if kind == "tcp" and m.group("path"):
        raise ProbeSpecError(f"meshbus: --app-health {text!r}: a tcp probe has no path")
    port = int(m.group("port")) if m.group("port") else app_port
    if port is None:
        raise ProbeSpecError(f"meshbus: --app-health {text!r} needs --app-port or a port (http:PORT/PATH)")
    return ProbeSpec(kind, port, m.group("path") or "/", **timing)


def http_passes(status_line: bytes) -> tuple[bool, str]:
    """Verdict on the first line of the app's answer: 200-399 passes (the kubelet's rule)."""
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f"answered something that is not HTTP: {status_line[:60]!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"answered {code}"


@dataclass(slots=True)
class ProbeTracker:
    """Consecutive results -> the app's state, with the thresholds of `ProbeSpec`."""

    success_threshold: int
    failure_threshold: int
    state: str = APP_UNKNOWN
    detail: str = "no probe answered yet"
    successes: int = 0
    failures: int = 0

    def record(self, ok: bool, detail: str) -> bool:
        """Count one probe result; True when the state changed."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.state != APP_HEALTHY and self.successes >= self.success_threshold:
                self.state, self.detail = APP_HEALTHY, detail
                return True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.state != APP_UNHEALTHY and self.failures >= self.failure_threshold:
                self.state = APP_UNHEALTHY
                self.detail = f"{detail} ({self.failures} failure(s) in a row)"
                return True
            if self.state == APP_UNKNOWN:
                self.detail = detail  # not ready yet anyway: say why
        return False


def probe_from_args(args: Any) -> ProbeSpec | None:
    """The ``--app-health*`` flags of meshbus-proxy (`meshbus.proxy.mesh.agent_args`) -> spec or None."""
    if not args.app_health:
        return None
    return parse_probe(
        args.app_health,
        args.app_port,
        period_s=args.app_health_period,
        timeout_s=args.app_health_timeout,
        success_threshold=args.app_health_success_threshold,
        failure_threshold=args.app_health_failure_threshold,
    )
