"""Mesh-mode command-line flags of meshbus-proxy.

Apart from proxy/mesh/agent.py so that building the parser (every worker does) imports neither
nats-py nor pydantic: a standalone worker must stay small.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from meshbus.bus.cert_flags import add_cert_args

ENV_BOOTSTRAP_NKEY = "MESHBUS_NATS_BOOTSTRAP_NKEY"
ENV_BOOTSTRAP_CERT = "MESHBUS_NATS_BOOTSTRAP_CERT"
ENV_BOOTSTRAP_KEY = "MESHBUS_NATS_BOOTSTRAP_KEY"


def add_agent_args(parser: Any) -> None:
    """Mesh-mode flags of meshbus-proxy (``--service`` turns mesh mode on)."""
    g = parser.add_argument_group("mesh mode (config from meshbus-discovery)")
    g.add_argument("--service", default=None, help="service this workload belongs to (turns on mesh mode)")
    g.add_argument("--service-account", default="default")
    g.add_argument("--labels", action="append", default=[], help="workload labels, key=value[,key=value]")
    g.add_argument("--node-id", default="", help="proxy id (default: <service>-<version>-<random>)")
    g.add_argument(
        "--advertise",
        default="127.0.0.1",
        help="address peers reach the inbound listener at (default: this host only; set it when peers run"
        " on other hosts)",
    )
    g.add_argument("--service-port", action="append", default=[], help="name=port (default: http=<app-port>)")
    g.add_argument(
        "--state-dir",
        default=None,
        help="kept across restarts (0600 files): the last good snapshot, and the key and certificate, so a"
        " restarted sidecar renews with its certificate instead of a new bootstrap token (default: none)",
    )
    g.add_argument("--state-file", default=None, help="last good snapshot file (default: in --state-dir)")
    h = parser.add_argument_group(
        "app health (mesh mode): a readiness probe of the local app, as a Kubernetes readinessProbe;"
        " while it fails /ready answers 503 APP_UNHEALTHY and the workload leaves every endpoint set"
    )
    h.add_argument(
        "--app-health",
        default=None,
        metavar="PROBE",
        help="http:/PATH (GET on --app-port; 200-399 passes), http:PORT/PATH, tcp or tcp:PORT (default: off)",
    )
    h.add_argument(
        "--app-health-period", type=float, default=1.0, help="seconds between probes (periodSeconds)"
    )
    h.add_argument("--app-health-timeout", type=float, default=1.0, help="seconds per probe (timeoutSeconds)")
    h.add_argument(
        "--app-health-success-threshold",
        type=int,
        default=1,
        help="passes in a row to be healthy (successThreshold)",
    )
    h.add_argument(
        "--app-health-failure-threshold",
        type=int,
        default=3,
        help="failures in a row to be unhealthy (failureThreshold)",
    )


def add_bus_auth_args(group: Any) -> None:
    """Flags of a secured bus (`meshbus.proxy.mesh.bus_auth`); ``--nats-ca``, ``--nats-cert`` and
    ``--nats-key`` are the common ones (`meshbus.bus.process.add_common_args`)."""
    add_cert_args(
        group,
        "nats-bootstrap",
        (ENV_BOOTSTRAP_CERT, ENV_BOOTSTRAP_KEY),
        "client certificate of the bootstrap NATS user, to get the first workload certificate",
    )
    group.add_argument(
        "--nats-bootstrap-nkey",
        default=os.environ.get(ENV_BOOTSTRAP_NKEY) or None,
        metavar="FILE",
        help=f"nkey seed of the bootstrap NATS user instead, for a NATS meshbus does not configure "
        f"(default ${ENV_BOOTSTRAP_NKEY})",
    )


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``["version=v1", "app=reviews,tier=web"]`` -> dict; raises ValueError naming the bad item."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep or not k.strip():
                raise ValueError(f"meshbus: bad label {part!r}: use key=value")
            out[k.strip()] = v.strip()
    return out
