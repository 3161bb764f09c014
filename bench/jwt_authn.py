"""JWT authentication cost: a server sidecar with a RequestAuthentication vs the same without, cached tokens.

    .venv/bin/python bench/jwt_authn.py [--duration 5] [--rounds 3] [--micro-only]

1. In-process (CPU, no sockets): the JWT filter's cost per request with a token already verified
   (the cache hit every repeated token takes), a first verification per algorithm (what a new token
   costs once), and a whole request through the inbound listener and exchange with in-memory
   transports (bench/micro.py's harness), CPU time per request with JWT off, on, and on with
   ``forwardOriginalToken`` (the token stays, so the request head goes upstream as received).
2. Through a real proxy: ``meshbus-proxy`` standalone with an inbound listener in front of nginx,
   ``wrk -t1 -c50`` sending one valid token (``Authorization: Bearer``) to both configs; rounds
   interleaved (off, on, off, on, ...), medians [min-max]; CPU per request of the proxy process from
   /proc. Same set-up as bench/run.py (load generator and origin on CPU 0, the proxy on CPU 1).
The lead takes the final figures in a quiet period; on a shared machine quote the ratio.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from run import ORIGIN, check_tools, cpu_seconds, med, nginx_conf, process
from scratch import scratch_dir

from tests.support.jwks import ALGORITHMS, Issuer

PROXY = 18121
ISSUER = Issuer()

SERVICE = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: origin}}
spec:
  hosts: [origin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {ORIGIN}}}}}]
"""


def request_authentication(forward: bool = False) -> str:
    return f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  jwtRules:
  - issuer: {ISSUER.iss}
    audiences: [origin]
    jwks: {json.dumps(ISSUER.jwks())}
    forwardOriginalToken: {"true" if forward else "false"}
"""


def micro() -> None:
    from meshbus.bus.config import load_text
    from meshbus.proxy.build.runtime import build_runtime
    from meshbus.proxy.codec.http1 import RequestHead
    from meshbus.proxy.core.routing import RequestView
    from meshbus.proxy.filters.jwt_authn import JwtAuthnFilter

    rt = build_runtime(load_text(request_authentication(), "ra.yaml").resources, app_port=ORIGIN)
    (route,) = rt.inbound.virtual_hosts[0].routes
    (flt,) = [f for f in route.chain.filters if isinstance(f, JwtAuthnFilter)]

    class Ctx:
        def __init__(self, token: str) -> None:
            h = {"host": "origin", "authorization": f"Bearer {token}"}
            self.head = RequestHead("GET", "/", "1.1", list(h.items()), h, True, False, 0, 0)
            self.view = RequestView("GET", "/", "origin", h, "127.0.0.1")
            self.filter_state: Any = None
            self.req_ops: Any = None

    token = ISSUER.token("ES256", aud="origin")
    flt.on_request_headers(Ctx(token))
    n = 50_000
    ctxs = [Ctx(token) for _ in range(n)]
    t = time.process_time()
    for c in ctxs:
        flt.on_request_headers(c)
    hit = (time.process_time() - t) / n * 1e6
    h = {"host": "origin"}
    plain = [
        type(
            "C",
            (),
            {
                "head": RequestHead("GET", "/", "1.1", [], h, True, False, 0, 0),
                "filter_state": None,
                "req_ops": None,
            },
        )()
        for _ in range(n)
    ]
    t = time.process_time()
    for c in plain:
        flt.on_request_headers(c)
    no_token = (time.process_time() - t) / n * 1e6
    print(
        f"JWT filter, token cached: {hit:.2f} us/request; no token: {no_token:.2f} us/request (CPU, in-process)"
    )
    for alg in ALGORITHMS:
        tokens = [ISSUER.token(alg, aud="origin", sub=f"u{i}") for i in range(200)]
        t = time.perf_counter()
        for tok in tokens:
            r = flt.on_request_headers(Ctx(tok))
            assert r is None, r
        print(f"  first verification {alg:>6}: {(time.perf_counter() - t) / len(tokens) * 1e6:7.1f} us")


def exchange_micro(n: int = 20_000) -> None:

    import uvloop
    from micro import RESPONSE, in_memory

    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import Address, BootstrapConfig

    token = ISSUER.token("ES256", aud="origin", ttl=3600)
    request = f"GET / HTTP/1.1\r\nHost: origin\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    async def one(text: str) -> float:
        tmp = scratch_dir("meshbus-jwt-micro-")
        (tmp / "mesh.yaml").write_text(text)
        cfg = BootstrapConfig(
            config_path=str(tmp / "mesh.yaml"), outbound=None, inbound=Address("127.0.0.1", 0), admin=None,
            app_port=ORIGIN,
        )  # fmt: skip
        server = ProxyServer(cfg)
        await server.start()
        dc, dt, up, ut, flush = in_memory(
            server,
            "inbound",
            next(c for name, c in server.runtime.clusters.items() if name.startswith("inbound")),
        )

        def loop(k: int) -> None:
            for _ in range(k):
                dc.data_received(request)
                flush()
                up.data_received(RESPONSE)
                flush()
            if not dt.written or not dt.written[-1].endswith(b"x\n"):
                raise RuntimeError(f"unexpected output: {dt.written[-1:]!r}")
            dt.written.clear()
            ut.written.clear()

        loop(2000)
        best = []
        for _ in range(5):  # CPU time, best of five: other processes on this machine only add
            t = time.process_time()
            loop(n)
            best.append(time.process_time() - t)
        dc.connection_lost(None)
        await server.shutdown(0)
        return min(best) / n * 1e6

    configs = {
        "JWT off": SERVICE,
        "JWT on": SERVICE + "---\n" + request_authentication(),
        "JWT fwd": SERVICE + "---\n" + request_authentication(forward=True),
    }
    us = {name: uvloop.run(one(text)) for name, text in configs.items()}
    print("through the inbound listener and exchange, in memory (CPU per request, best of 5):")
    for name, v in us.items():
        print(f"  {name:<8} {v:6.2f} us  (+{v - us['JWT off']:.2f})")


def run_wrk(port: int, duration: int, pid: int, token: str) -> tuple[float, float, int]:
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c50", f"-d{duration}s", "-H", "Host: origin",
         "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = cpu_seconds(pid)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, (after - before) * 1e6 / max(1, total), int(m.group(1)) if m else 0


def through_proxy(duration: int, rounds: int) -> None:
    if check_tools():
        return
    tmp = scratch_dir("meshbus-jwt-bench-")
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    # "JWT on" strips the token before the app (Istio's default): the proxy rebuilds the request head
    # instead of forwarding it as received; "JWT fwd" keeps it (forwardOriginalToken), head as received.
    configs = {
        "JWT off": SERVICE,
        "JWT on": SERVICE + "---\n" + request_authentication(),
        "JWT fwd": SERVICE + "---\n" + request_authentication(forward=True),
    }
    token = ISSUER.token("ES256", aud="origin", ttl=3600)
    results: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in configs}
    with ExitStack() as stack:
        stack.enter_context(process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"))
        for _ in range(rounds):
            for name, text in configs.items():
                path = tmp / f"{name.replace(' ', '-')}.yaml"
                path.write_text(text)
                cmd = [sys.executable, "-m", "meshbus.proxy", "--config", str(path), "--outbound", "off",
                       "--inbound", f"127.0.0.1:{PROXY}", "--admin", "off", "--app-port", str(ORIGIN),
                       "--workers", "1", "--log-level", "warning"]  # fmt: skip
                with process(cmd, 1, PROXY, tmp / "proxy.log") as pid:
                    run_wrk(PROXY, 1, pid, token)  # warm-up (and the one signature check)
                    rps, cpu_us, errors = run_wrk(PROXY, duration, pid, token)
                if errors:
                    raise RuntimeError(f"{name}: {errors} non-2xx responses (see {tmp}/proxy.log)")
                results[name][0].append(rps)
                results[name][1].append(cpu_us)
    print(
        f"\nthrough meshbus-proxy (inbound, wrk -t1 -c50, {rounds} rounds x {duration}s, one cached token):"
    )
    for name, (rps, cpu) in results.items():
        print(f"  {name:<8} {med(rps)} req/s   {med(cpu)} us CPU/request")
    off, on = results["JWT off"], results["JWT on"]
    if off[0] and on[0]:
        cost = 1 - sorted(on[0])[len(on[0]) // 2] / sorted(off[0])[len(off[0]) // 2]
        print(f"  throughput cost of JWT with cached tokens: {cost * 100:.1f}% (target < 10%)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--micro-only", action="store_true")
    a = ap.parse_args()
    micro()
    exchange_micro()
    if not a.micro_only:
        through_proxy(a.duration, a.rounds)


if __name__ == "__main__":
    main()
