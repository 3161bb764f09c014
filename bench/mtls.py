"""Two-proxy chain benchmark: plaintext vs mesh mTLS, side by side with HAProxy chained with mutual TLS.

    .venv/bin/python bench/mtls.py [--duration 5] [--latency-duration 5] [--rounds 3]

Chain: wrk -> proxy A (client sidecar, outbound) -> proxy B (server sidecar, inbound) -> nginx origin.
Set-up as bench/run.py and shared/reference/bench-anchors.md: load generator and origin on CPU 0,
both proxies of a chain on CPU 1, keep-alive, rounds interleaved, medians [min-max].
- meshbus plain: the same two sidecars without a mesh identity (plaintext A -> B).
- meshbus mTLS: A and B with SVIDs issued by the CA issuer (ECDSA P-256); A originates mTLS with
  auto-mTLS (the origin's ServiceEntry endpoint names its service account) and checks B's SPIFFE ID,
  B terminates it under PeerAuthentication STRICT. Handshakes are counted: pooled, never per request.
- HAProxy plain / mTLS: two haproxy processes (nbthread 1), A -> B with ``ssl verify required`` and
  client certificates from the same CA.
Throughput: ``wrk -t1 -c50``; CPU per request = CPU time of BOTH proxy processes / requests.
Latency: h2load at 1000 req/s (10 connections). Needs wrk, h2load, nginx, haproxy, taskset.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py next to this file
from run import (
    HOST,
    ORIGIN,
    Result,
    check_tools,
    cpu_seconds,
    med,
    nginx_conf,
    process,
    run_latency,
    run_wrk,
)

A_PORT, B_PORT, HA_A, HA_B, B_STATS = 18101, 18102, 18111, 18112, 18103
TD = "cluster.local"


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


def haproxy_chain_conf(tmp: Path, role: str, tls: bool) -> str:
    if role == "a":
        ssl = f" ssl verify required ca-file {tmp}/root.pem crt {tmp}/a.pem" if tls else ""
        bind, server = f"127.0.0.1:{HA_A}", f"127.0.0.1:{HA_B}{ssl}"
    else:
        ssl = f" ssl crt {tmp}/b.pem ca-file {tmp}/root.pem verify required" if tls else ""
        bind, server = f"127.0.0.1:{HA_B}{ssl}", f"127.0.0.1:{ORIGIN}"
    return f"""
global
  nbthread 1
  maxconn 5000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind {bind}
  default_backend be
backend be
  server next {server} maxconn 1000
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


async def _serve_sidecar(args: argparse.Namespace) -> None:
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import BootstrapConfig, parse_address

    tmp = Path(args.dir)
    cfg = BootstrapConfig(
        config_path=args.config,
        outbound=parse_address(args.outbound) if args.outbound != "off" else None,
        inbound=parse_address(args.inbound) if args.inbound != "off" else None,
        admin=None,
        app_port=args.app_port,
        access_log=args.access_log,
        log_level="warning",
    )
    server = ProxyServer(cfg)
    await server.start()
    if args.tls:
        server.enable_mesh_tls(FileCertClient(tmp, args.name, args.sa))
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
    ap.add_argument("--app-port", type=int, default=None)
    ap.add_argument("--access-log", default=None)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--name", default="a")
    ap.add_argument("--sa", default="client")
    ap.add_argument("--stats-port", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import uvloop

    uvloop.run(_serve_sidecar(args))
    return 0


# ---- parent ----------------------------------------------------------------------------------------------


def meshbus_chain(tmp: Path, tls: bool) -> list[tuple[list[str], int]]:
    py = sys.executable
    me = str(Path(__file__).resolve())
    tag = "tls" if tls else "plain"
    common = ["--dir", str(tmp)] + (["--tls"] if tls else [])
    b = [py, me, "sidecar", *common, "--config", str(tmp / "b.yaml"), "--inbound", f"127.0.0.1:{B_PORT}",
         "--app-port", str(ORIGIN), "--name", "b", "--sa", "origin", "--access-log", str(tmp / f"b-{tag}.log"),
         "--stats-port", str(B_STATS)]  # fmt: skip
    a = [py, me, "sidecar", *common, "--config", str(tmp / "a.yaml"), "--outbound", f"127.0.0.1:{A_PORT}",
         "--name", "a", "--sa", "client", "--access-log", str(tmp / f"a-{tag}.log")]  # fmt: skip
    return [(b, B_PORT), (a, A_PORT)]


def haproxy_chain(tmp: Path, tls: bool) -> list[tuple[list[str], int]]:
    tag = "tls" if tls else "plain"
    out = []
    for role, port in (("b", HA_B), ("a", HA_A)):
        f = tmp / f"haproxy-{role}-{tag}.cfg"
        f.write_text(haproxy_chain_conf(tmp, role, tls))
        out.append((["haproxy", "-f", str(f)], port))
    return out


def handshakes() -> str:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", B_STATS), 1.0) as s:
            return s.recv(4096).decode().strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sidecar"]:
        return sidecar_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--latency-duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--only", default="", help="comma list: meshbus-plain,meshbus-mtls,haproxy-plain,haproxy-mtls"
    )
    args = ap.parse_args(argv)
    if check_tools():
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="meshbus-bench-mtls-"))
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    (tmp / "a.yaml").write_text(client_sidecar_conf())
    (tmp / "b.yaml").write_text(server_sidecar_conf())
    make_certs(tmp)
    setups = {
        "meshbus-plain": meshbus_chain(tmp, False),
        "meshbus-mtls": meshbus_chain(tmp, True),
        "haproxy-plain": haproxy_chain(tmp, False),
        "haproxy-mtls": haproxy_chain(tmp, True),
    }
    if args.only:
        setups = {k: v for k, v in setups.items() if k in args.only.split(",")}
    results = {name: Result() for name in setups}
    notes: dict[str, str] = {}
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s + latency {args.latency_duration}s")
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"):
        for rnd in range(args.rounds):
            for name, procs in setups.items():
                with ExitStack() as stack:
                    pids = [
                        stack.enter_context(process(cmd, 1, port, tmp / f"{name}-{i}.log"))
                        for i, (cmd, port) in enumerate(procs)
                    ]
                    port = procs[-1][1]
                    run_wrk(port, 1, None)  # warm-up: pools, caches
                    before = sum(cpu_seconds(p) for p in pids)
                    rps, _, errors = run_wrk(port, args.duration, None)
                    cpu_us = (
                        (sum(cpu_seconds(p) for p in pids) - before) * 1e6 / max(1.0, rps * args.duration)
                    )
                    p50, p90, p99 = run_latency(port, args.latency_duration, tmp)
                    if name == "meshbus-mtls":
                        notes[name] = handshakes()
                res = results[name]
                res.rps.append(rps)
                res.cpu_us.append(cpu_us)
                res.errors += errors
                res.p50.append(p50)
                res.p90.append(p90)
                res.p99.append(p99)
                print(f"  round {rnd + 1} {name:14s} {rps:10,.0f} rps  cpu {cpu_us:6.1f} us/req (both proxies)  "
                      f"p50/p90/p99 {p50:.3f}/{p90:.3f}/{p99:.3f} ms  errors {errors}")  # fmt: skip
    report(results, notes)
    return 0


def _m(results: dict[str, Result], name: str, attr: str) -> float:
    r = results.get(name)
    return statistics.median(getattr(r, attr)) if r is not None else float("nan")


def report(results: dict[str, Result], notes: dict[str, str]) -> None:
    hp = _m(results, "haproxy-mtls", "rps")
    print()
    print("| chain (A -> B) | rps median [min-max] | x HAProxy mTLS | CPU us/req (A+B) | @1000 rps p50 / p90 / p99 ms "
          "| errors |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        p50, p90, p99 = (statistics.median(x) for x in (r.p50, r.p90, r.p99))
        print(f"| {name} | {med(r.rps)} | {statistics.median(r.rps) / hp:.2f} | {med(r.cpu_us)} | "
              f"{p50:.3f} / {p90:.3f} / {p99:.3f} | {r.errors} |")  # fmt: skip
    for kind in ("meshbus", "haproxy"):
        plain, mtls = f"{kind}-plain", f"{kind}-mtls"
        if plain in results and mtls in results:
            cpu = _m(results, mtls, "cpu_us") / _m(results, plain, "cpu_us")
            rps = _m(results, mtls, "rps") / _m(results, plain, "rps")
            print(
                f"{kind}: mTLS costs {100 * (cpu - 1):+.0f}% CPU per request, throughput x{rps:.2f} vs plaintext"
            )
    if "meshbus-mtls" in notes:
        print(f"meshbus-mtls handshakes counted by proxy B after the last round (outbound inbound failures): "
              f"{notes['meshbus-mtls']}")  # fmt: skip
    print("targets (issue 5): meshbus mTLS >= 0.6x HAProxy mTLS throughput; mTLS CPU overhead <= HAProxy's")


if __name__ == "__main__":
    sys.exit(main())
