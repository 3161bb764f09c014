"""The two-sidecar chain the mTLS benchmark (bench/mtls.py) and the soak (bench/soak.py) drive.

    load -> proxy A (client sidecar, outbound) -> proxy B (server sidecar, inbound) -> nginx origin

``prepare`` writes the origin's nginx config, both sidecars' configs and the certificates (SVIDs from
the CA issuer, ECDSA P-256, plus HAProxy's combined PEMs) into a folder; ``meshbus_chain`` gives the
two sidecar commands. Each sidecar is one process (``python bench/chain.py sidecar ...``): a
ProxyServer with the access log on, its metrics recorded (as always) and, with ``tls``, the mesh
identity read from the PEM files (no CA round trip): A originates mTLS with auto-mTLS (the origin's
ServiceEntry endpoint names its service account) and checks B's SPIFFE ID, B terminates it under
PeerAuthentication STRICT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py next to this file
from run import HOST, ORIGIN, nginx_conf

A_PORT, B_PORT, B_STATS = 18101, 18102, 18103
TD = "cluster.local"


def prepare(tmp: Path) -> None:
    """nginx.conf (and its temp folders), a.yaml, b.yaml and the certificates, in ``tmp``."""
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir(exist_ok=True)
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    (tmp / "a.yaml").write_text(client_sidecar_conf())
    (tmp / "b.yaml").write_text(server_sidecar_conf())
    make_certs(tmp)


# ---- certificates ---------------------------------------------------------------------------------------


def make_certs(tmp: Path) -> None:
    """root.pem; <name>-chain.pem / <name>-key.pem and HAProxy's <name>.pem (chain + key) for a and b."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from meshbus.bus.spiffe import SpiffeId
    from meshbus.control.ca.issuer import Issuer, IssuerConfig, generate_root

    now = dt.datetime.now(dt.UTC)
    material = generate_root(TD, now)
    issuer = Issuer(material, IssuerConfig(trust_domain=TD))
    (tmp / "root.pem").write_bytes(material.root_pem)
    for name, sa in (("a", "client"), ("b", "origin")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issuer.sign(key.public_key(), SpiffeId.workload(TD, "default", sa), now)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (tmp / f"{name}-chain.pem").write_bytes(cert.chain_pem)
        (tmp / f"{name}-key.pem").write_bytes(key_pem)
        (tmp / f"{name}.pem").write_bytes(cert.chain_pem + key_pem)


# ---- configs ---------------------------------------------------------------------------------------------


def client_sidecar_conf() -> str:
    """Proxy A: the origin as a mesh service whose one endpoint is proxy B's inbound listener."""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {HOST}, namespace: default}}
spec:
  hosts: [{HOST}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {B_PORT}}}, labels: {{version: v1}}, serviceAccount: origin}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {HOST}, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 1000, connectTimeout: 1s}}, http: {{http1MaxPendingRequests: 1000}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {HOST}, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]
    timeout: 5s
    retries: {{attempts: 2, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,refused-stream"}}
"""


def server_sidecar_conf() -> str:
    return """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"""


# ---- a meshbus sidecar process (child) -------------------------------------------------------------------


class FileCertClient:
    """The CertClient surface (``current``, ``add_rotation_callback``) over PEM files: no CA round trip."""

    def __init__(self, tmp: Path, name: str, sa: str) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from meshbus.bus.spiffe import SpiffeId
        from meshbus.proxy.mesh.identity import build_identity

        key = load_pem_private_key((tmp / f"{name}-key.pem").read_bytes(), None)
        self.current = build_identity(
            SpiffeId.workload(TD, "default", sa),
            key,  # type: ignore[arg-type]
            (tmp / f"{name}-chain.pem").read_bytes(),
            (tmp / "root.pem").read_bytes(),
            1,
            time.time(),
        )

    def add_rotation_callback(self, cb: Any) -> None:
        pass


async def start_sidecar(args: argparse.Namespace, access_log: str | None, admin: str) -> Any:
    """A started ProxyServer for ``sidecar_main``'s arguments, with the mesh identity under ``--tls``
    (bench/chain_tail.py starts its sidecars through this too)."""
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import BootstrapConfig, parse_address

    cfg = BootstrapConfig(
        config_path=args.config,
        outbound=parse_address(args.outbound) if args.outbound != "off" else None,
        inbound=parse_address(args.inbound) if args.inbound != "off" else None,
        admin=parse_address(admin) if admin != "off" else None,
        app_port=args.app_port,
        access_log=access_log,
        log_level="warning",
    )
    server = ProxyServer(cfg)
    await server.start()
    if args.tls:
        server.enable_mesh_tls(FileCertClient(Path(args.dir), args.name, args.sa))
    return server


async def _serve_sidecar(args: argparse.Namespace) -> None:
    server = await start_sidecar(args, args.access_log, args.admin)
    stats = None
    if args.stats_port:
        # handshake counts for the parent: one line of "outbound inbound" on connect
        async def report(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            h = server.tls_stats.handshakes
            w.write(f"{h['outbound']} {h['inbound']} {dict(server.tls_stats.failures)}\n".encode())
            await w.drain()
            w.close()

        stats = await asyncio.start_server(report, "127.0.0.1", args.stats_port)
    try:
        await server.serve_until_stopped()
    finally:
        if stats is not None:
            stats.close()


def sidecar_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--outbound", default="off")
    ap.add_argument("--inbound", default="off")
    ap.add_argument("--admin", default="off")
    ap.add_argument("--app-port", type=int, default=None)
    ap.add_argument("--access-log", default=None)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--name", default="a")
    ap.add_argument("--sa", default="client")
    ap.add_argument("--stats-port", type=int, default=0)
    ap.add_argument("--handshake-timeout", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.handshake_timeout:  # bench/chain_callgrind.py: a peer under valgrind handshakes slowly
        from meshbus.proxy.tls import mtls

        mtls.HANDSHAKE_TIMEOUT = args.handshake_timeout
    import uvloop

    uvloop.run(_serve_sidecar(args))
    return 0


# ---- parent ----------------------------------------------------------------------------------------------


def meshbus_chain(
    tmp: Path, tls: bool, admin: tuple[int, int] | None = None, access_log: bool = True
) -> list[tuple[list[str], int]]:
    """The commands of B then A, each with the port to wait on; ``admin``: (B's, A's) admin ports;
    ``access_log``: each sidecar writes its JSON access log to a file (the default, as in mesh use)."""
    py = sys.executable
    me = str(Path(__file__).resolve())
    tag = "tls" if tls else "plain"
    common = ["--dir", str(tmp)] + (["--tls"] if tls else [])
    b_admin, a_admin = (["--admin", f"127.0.0.1:{port}"] for port in admin) if admin else ([], [])
    b_log, a_log = (["--access-log", str(tmp / f"{n}-{tag}.log")] if access_log else [] for n in "ba")
    b = [py, me, "sidecar", *common, "--config", str(tmp / "b.yaml"), "--inbound", f"127.0.0.1:{B_PORT}",
         "--app-port", str(ORIGIN), "--name", "b", "--sa", "origin", *b_log,
         "--stats-port", str(B_STATS), *b_admin]  # fmt: skip
    a = [py, me, "sidecar", *common, "--config", str(tmp / "a.yaml"), "--outbound", f"127.0.0.1:{A_PORT}",
         "--name", "a", "--sa", "client", *a_log, *a_admin]  # fmt: skip
    return [(b, B_PORT), (a, A_PORT)]


def handshakes() -> str:
    """Proxy B's TLS handshake counts ("outbound inbound failures"), or "" when it does not answer."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", B_STATS), 1.0) as s:
            return s.recv(4096).decode().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    if sys.argv[1:2] != ["sidecar"]:
        sys.exit("usage: python bench/chain.py sidecar ... (started by bench/mtls.py and bench/soak.py)")
    sys.exit(sidecar_main(sys.argv[2:]))
