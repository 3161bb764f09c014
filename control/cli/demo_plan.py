"""What `meshctl up` runs besides NATS: the control plane and the demo mesh.

- meshbus-config, meshbus-discovery (creates the config bucket if config has not yet), meshbus-ca,
  meshbus-policy (global rate limit counters, JWT key sets);
  meshbus-telemetry (mesh-wide /metrics, the live graph at http://127.0.0.1:15090/, spans to
  <data-dir>/logs/spans.jsonl, access logs in a JetStream stream: ``meshctl logs``, ``meshctl top``);
- two versions of the demo "reviews" service, each behind a mesh-mode sidecar (inbound -> app),
  registered with the label version=v1 / v2 and the service port http=9080;
- a "productpage" sidecar with only an outbound listener, the client side of the demo:
  ``curl -H 'Host: reviews' 127.0.0.1:15001/``.
Sidecars keep their last good snapshot, key and certificate in <data-dir>/sidecars/<name>/ (so a
restarted sidecar renews with its certificate: the tokens are single-use) and write access logs
(JSON, with the peer's SPIFFE ID) to <data-dir>/logs/<name>.access.log.
The demo Istio config (samples/demo/*.yaml: DestinationRule subsets, VirtualService 90/10) is
applied through meshbus-config once it answers. Each sidecar gets a single-use bootstrap token
from meshbus-ca (``meshctl up`` mints them once the CA answers), so sidecar-to-sidecar traffic is
mTLS with SPIFFE identities; ``meshctl up --no-mtls`` runs them without identity.

Ports are the well-known ones (outbound 15001, admin 15000, ...) unless ``ports_from`` is given:
then every port is ``ports_from + offset`` (see `DemoPorts`), so tests run the demo on free ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meshbus.bus.subjects import DEFAULT_ROOT, Subjects

if TYPE_CHECKING:
    from .up import Child

SERVICE_PORT = 9080
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "demo"
"""The demo config in a source checkout (editable install); ``meshctl up --demo-config DIR`` overrides."""


@dataclass(frozen=True, slots=True)
class DemoPorts:
    client_outbound: int = 15001
    client_admin: int = 15000
    v1_app: int = 9081
    v1_inbound: int = 15106
    v1_admin: int = 15100
    v2_app: int = 9082
    v2_inbound: int = 15206
    v2_admin: int = 15200
    telemetry: int = 15090

    @classmethod
    def starting_at(cls, base: int) -> DemoPorts:
        return cls(*(base + i for i in range(len(cls.__slots__))))

    @classmethod
    def count(cls) -> int:
        return len(cls.__slots__)


def _sidecar(
    python: str,
    data_dir: Path,
    name: str,
    *,
    service: str,
    version: str,
    admin: int,
    inbound: int | None,
    outbound: int | None,
    app_port: int | None,
) -> list[str]:
    argv = [python, "-m", "meshbus.proxy", "--service", service, "--namespace", "default"]
    argv += ["--service-account", service, "--node-id", name, "--admin", f"127.0.0.1:{admin}"]
    argv += ["--inbound", f"127.0.0.1:{inbound}" if inbound else "off"]
    argv += ["--outbound", f"127.0.0.1:{outbound}" if outbound else "off"]
    argv += [
        "--labels",
        f"app={service},version={version}",
        "--state-dir",
        str(data_dir / "sidecars" / name),
        "--access-log",
        str(data_dir / "logs" / f"{name}.access.log"),
    ]
    if app_port:
        argv += ["--app-port", str(app_port), "--service-port", f"http={SERVICE_PORT}"]
        argv += ["--app-health", "http:/healthz"]  # a hung or dead app leaves the endpoint sets
    return argv


def children(
    data_dir: Path, *, python: str, ports_from: int | None = None, root: str = DEFAULT_ROOT
) -> list[Child]:
    """What runs besides NATS, in start order; ``root`` is the subject root they serve under."""
    from .up import Child

    p = DemoPorts.starting_at(ports_from) if ports_from else DemoPorts()
    bus = Subjects(root)
    spans = str(data_dir / "logs" / "spans.jsonl")
    telemetry_argv: tuple[str, ...] = (python, "-m", "meshbus.telemetry", "--host", "127.0.0.1")
    telemetry_argv += ("--metrics-port", str(p.telemetry), "--spans-file", spans)
    out = [
        Child(
            "meshbus-config", (python, "-m", "meshbus.control.config"), f"bus: {bus.component_all('config')}"
        ),
        Child(
            "meshbus-discovery",
            (python, "-m", "meshbus.control.discovery", "--create-config-bucket"),
            f"bus: {bus.component_all('xds')}",
        ),
        Child(
            "meshbus-ca",
            (python, "-m", "meshbus.control.ca", "--ca-dir", str(data_dir / "ca")),
            f"bus: {bus.component_all('ca')} (keys in {data_dir / 'ca'})",
        ),
        Child(
            "meshbus-policy", (python, "-m", "meshbus.control.policy"), f"bus: {bus.component_all('policy')}"
        ),
        Child(
            "meshbus-telemetry",
            telemetry_argv,
            f"graph http://127.0.0.1:{p.telemetry}/, Prometheus http://127.0.0.1:{p.telemetry}/metrics",
        ),
    ]
    for version, app, inbound, admin in (
        ("v1", p.v1_app, p.v1_inbound, p.v1_admin),
        ("v2", p.v2_app, p.v2_inbound, p.v2_admin),
    ):
        out.append(
            Child(
                f"reviews-{version}",
                (
                    python,
                    "-m",
                    "meshbus.control.demo.app",
                    "--name",
                    "reviews",
                    "--version",
                    version,
                    "--port",
                    str(app),
                ),
                f"app http://127.0.0.1:{app}",
            )
        )
        argv = _sidecar(
            python, data_dir, f"reviews-{version}-sidecar", service="reviews", version=version,
            admin=admin, inbound=inbound, outbound=None, app_port=app,
        )  # fmt: skip
        out.append(
            Child(
                f"reviews-{version}-sidecar",
                tuple(argv),
                f"inbound 127.0.0.1:{inbound} -> app :{app}, admin :{admin}",
                admin_port=admin,
                identity=("default", "reviews"),
            )
        )
    argv = _sidecar(
        python, data_dir, "productpage-sidecar", service="productpage", version="v1",
        admin=p.client_admin, inbound=None, outbound=p.client_outbound, app_port=None,
    )  # fmt: skip
    out.append(
        Child(
            "productpage-sidecar",
            tuple(argv),
            f"outbound 127.0.0.1:{p.client_outbound} (curl -H 'Host: reviews' 127.0.0.1:{p.client_outbound}/),"
            f" admin :{p.client_admin}",
            admin_port=p.client_admin,
            identity=("default", "productpage"),
        )
    )
    return out
