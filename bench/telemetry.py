"""Telemetry's cost, per configuration, each next to telemetry off: CPU per request of both sidecars, throughput.

    .venv/bin/python bench/telemetry.py [--duration 3] [--rounds 8] [--only on-1,on-100] [--ship local,bus]
                                        [--spans otlp|file] [--rate 2000] [--method paired|together]

Chain: wrk -> proxy A (client sidecar, outbound) -> proxy B (server sidecar, inbound) -> nginx origin,
plaintext (bench/mtls.py prices mTLS). Load generator, origin, nats-server, meshbus-telemetry and the
OTLP receiver on CPU 0; all proxies on CPU 1 (bench/run.py's set-up).

Cases (a Telemetry resource on both sidecars):
- off:          every request metric off, access logging off, tracing at 0% (what is left: the trace
                decision and context propagation, which every request gets);
- metrics:      Istio's request metrics only;
- metrics+log:  and an access-log record per request;
- on-1:         and tracing at 1% (Istio's default): "telemetry fully on" in issue 13;
- on-100:       and every request traced (a span per hop, both hops).
Shipping:
- local: nothing leaves the process: access-log records and span rows are taken off their queues and
         discarded (so the request path does all its work, and no sink costs anything);
- bus:   as in mesh mode (proxy/mesh/mode.py: the same shipper, access-log sink and span resource):
         metric deltas every second, spans and access logs, over a real nats-server to a real
         meshbus-telemetry, which exports the spans by OTLP/HTTP to a receiver that keeps nothing
         (``--spans file``: to its JSON-lines file instead) and keeps the logs in its JetStream stream.
         "on-1/bus" is what issue 13 calls telemetry fully on.

Method (changed from one run per setting per round, compared by medians of columns: rounds on this
shared machine vary by 20% and more, which hides a 5% effect). Every setting's pair of sidecars is
started once and stays up (idle while another is measured). Each round measures, for each setting,
a pair of adjacent runs: off (same shipping) and the setting, off first in every other pair, so a
drift in the machine's load weighs on both; many short rounds (8 x 3 s by default). A run's CPU is
counted from wrk's start to ``TAIL_S`` after its end, so the shipper's batch of the run's last second
and the collector's work on it belong to the run (off gets the same tail). The cost of a setting is
taken per round from its pair (CPU per request ratio and us, throughput ratio) and reported as the
median [min .. max] over rounds. CPU per request of both sidecars (``/proc/<pid>/stat`` user+sys) is
the steadier figure: a busy core lowers throughput but hardly changes it. Every run is printed, and
every setting's medians [min-max] are kept in the first table (off's runs are all its pairs' runs).
``--rate R``: each run is h2load at R requests/s (10 connections) instead of wrk flat out, so off
and the setting carry the same load and their CPU per request compares like for like (flat out, a
setting that lowers throughput, or a load generator's core made busy by the collector and
nats-server, leaves the proxies less to batch per event-loop turn, which raises CPU per request by
itself); throughput is then fixed, and CPU per request is the figure.
nats-server, meshbus-telemetry and the OTLP receiver share CPU 0 with wrk and nginx at normal
priority. At 100% sampling their bursts (~20,000 spans a second to decode, encode and post) take
CPU from wrk, which then sends fewer requests, and the sidecars, with fewer requests to batch per
event-loop turn, spend more CPU per request: part of on-100/bus's cost is that (rounds where it kept
its throughput had about local's CPU per request). Running them at nice 19 was tried and is not
done: starved, meshbus-telemetry dropped half the spans, which flattered its own CPU figure.
The spans meshbus-telemetry exported and dropped are printed at the end (dropped should be 0).
meshbus-telemetry's CPU is reported per 1,000 mesh requests per second over each run (Mixer cost
0.6 vCPU; the goal is < 0.02); it includes what every idle sidecar ships (an empty metric batch a
second each), so off's figure is the floor. Needs wrk, nginx, taskset.
Then one replica's capacity: the CPU to decode and merge one sidecar's batch (120 series: a sidecar
talking to 10 peers, 3 response codes each), and so how many sidecars reporting every second one
replica keeps up with (``--ingest-only`` runs just that part).

``--method together`` (the verdict's method when the machine is not quiet; ``paired``, above, stays
the default and its figures keep their meaning): in each round off and the setting are loaded at
the same time, each chain by its own wrk (both on CPU 0), their four sidecars sharing CPU 1. Paired
runs follow each other, so a neighbour's burst lands on one side of a pair and not the other: on
this shared machine single pairs ranged -22% .. +47% and off/local alone 12k-19.8k rps between 3-s
runs, several % of noise in a median. Run together, both sides live through the same seconds of the
machine: the kernel shares CPU 1 between the two busy chains about equally, so what differs is how
many requests each gets through with its share, and the throughput ratio is the ratio of CPU per
request of the sidecars (what a setting costs a saturated proxy), with the noise mostly cancelled.
What it does not show, and why it does not flatter: (1) it is not the throughput of one chain alone
on a core; it is the same ratio a CPU-bound sidecar's throughput would fall by, which is how the
issue's "% apart" reads; CPU per request is still reported for both sides, as in paired runs.
(2) In the bus case nats-server and meshbus-telemetry work on CPU 0 beside the two wrks and nginx;
in paired runs their bursts (the setting's spans and logs) slow only the setting's wrk, so part of
a paired figure is the load generator losing CPU to the collector, a cost of this bench's layout
(in a mesh the collector runs elsewhere), not of the sidecars. Run together, that CPU 0 work slows
both wrks alike, so it is left out of the figure; CPU 1 is what is compared. Should CPU 0 become
the bottleneck (the two wrks cannot keep both chains busy), the ratio would tend to 1 and hide the
cost: the sidecars' CPU per request, printed for every run, is the check (its ratio and the
throughput ratio must agree). meshbus-telemetry's CPU is then the pair's, per 1,000 rps of both.

Instructions per request of each sidecar per setting, blind to the machine's load: bench/telemetry_cost.py
(callgrind, in memory: what the sidecars' Python does, without sockets and the event loop).

``--profile DIR``: py-spy (``--native``: compiled modules show as their C functions) records both
proxies during each measured run into DIR (``<case>-<ship>-r<round>-<a|b>.txt``, py-spy's raw format) and the
top functions by own time are printed; the sampler costs CPU, so such a run's figures are not the
bench's (compare profiles with profiles).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py next to this file
from run import HOST, ORIGIN, cpu_seconds, med, nginx_conf, process, run_wrk, start_h2load
from scratch import scratch_dir

A_PORT, B_PORT, TEL_PORT, OTLP_PORT = 18201, 18202, 18203, 18204
TAIL_S = 1.3  # > the shipper's interval (1 s) and the access-log writer's (0.2 s)

CASES = ("off", "metrics", "metrics+log", "on-1", "on-100")
SHIPPING = ("local", "bus")
GOALS = {"on-1": 5.0, "on-100": 15.0}  # issue 13: % apart from off

_HEAD = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: bench, namespace: istio-system}\nspec:\n"


def telemetry_for(case: str) -> str:
    percent = {"on-1": 1, "on-100": 100}.get(case, 0)
    spec = f"  tracing: [{{randomSamplingPercentage: {percent}}}]\n"
    if case == "off":
        spec += "  metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]\n"
    if case in ("off", "metrics"):
        spec += "  accessLogging: [{disabled: true}]\n"
    return _HEAD + spec


def client_conf(case: str, b_port: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {HOST}, namespace: default}}
spec:
  hosts: [{HOST}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {b_port}}}, labels: {{app: {HOST}, version: v1}}, serviceAccount: origin}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {HOST}, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 1000}}, http: {{http1MaxPendingRequests: 1000}}}}
---
{telemetry_for(case)}"""


# ---- a sidecar process (child): a standalone proxy that ships as a mesh-mode one does -----------------


class _Discard:
    """An access-log sink that takes the records (rows) and keeps none (``--ship local``)."""

    async def write_rows(self, rows: list[Any]) -> None:
        pass

    async def close(self) -> None:
        pass


async def _drain_spans(buffer: Any) -> None:
    while True:
        await asyncio.sleep(1.0)
        buffer.drain()


async def _serve(args: argparse.Namespace) -> None:
    from meshbus.bus.connection import BusConnection, BusSettings
    from meshbus.bus.schemas.telemetry import Source
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import BootstrapConfig, parse_address
    from meshbus.proxy.filters.spans import SpanRecorder
    from meshbus.proxy.mesh.telemetry_ship import BusSink, TelemetryShipper
    from meshbus.telemetry.peer import Workload

    labels = {"app": args.name, "version": "v1"}
    cfg = BootstrapConfig(
        config_path=args.config,
        outbound=parse_address(args.outbound) if args.outbound != "off" else None,
        inbound=parse_address(args.inbound) if args.inbound != "off" else None,
        admin=None,
        app_port=args.app_port,
        labels=labels,
        log_level="warning",
    )
    server = ProxyServer(cfg)
    await server.start()
    if os.environ.get("BENCH_GC_FREEZE"):  # experiment: start-up objects out of the collector's sight
        import gc

        gc.freeze()
    dropped = server.internal.telemetry_dropped.labels
    buffer = SpanRecorder(dropped=dropped("spans"))
    workload = Workload.of(args.name, "default", labels, args.name)
    server.observe.set_identity(workload, args.name, f"{args.name}.default.svc.cluster.local", buffer)
    shipper = None
    bus = None
    drainer = None
    if args.nats:
        bus = BusConnection(BusSettings(url=args.nats, name=f"bench-{args.name}"))
        await bus.connect()
        resource = {  # as mesh mode's (proxy/mesh/mode.py)
            "service.name": f"{workload.canonical_service}.default",
            "service.namespace": "default",
            "service.version": workload.canonical_revision,
            "service.instance.id": f"{args.name}-bench",
            "k8s.workload.name": workload.name,
        }
        source = Source(f"{args.name}-bench", args.name, "default", workload.name)
        server.add_access_log_sink(BusSink(bus, source, dropped("access_log")))
        shipper = TelemetryShipper(bus, source, server.registry, buffer, dropped, resource=resource)
        shipper.start()
    else:
        server.add_access_log_sink(_Discard())
        drainer = asyncio.create_task(_drain_spans(buffer))
    try:
        await server.serve_until_stopped()
    finally:
        if drainer is not None:
            drainer.cancel()
        if shipper is not None:
            await shipper.stop()
        if bus is not None:
            await bus.close()


def sidecar_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--outbound", default="off")
    ap.add_argument("--inbound", default="off")
    ap.add_argument("--app-port", type=int, default=None)
    ap.add_argument("--name", default="client")
    ap.add_argument("--nats", default="")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import uvloop

    uvloop.run(_serve(args))
    return 0


# ---- parent ----------------------------------------------------------------------------------------------


def chain(tmp: Path, case: str, ship: str, nats: str, index: int) -> list[tuple[list[str], int]]:
    """The two sidecars of ``case``/``ship`` (B first), on ports of their own: every setting's pair
    runs for the whole bench, idle while another is measured."""
    py, me = sys.executable, str(Path(__file__).resolve())
    a_port, b_port = A_PORT + 10 * index, B_PORT + 10 * index
    name = f"{case}-{ship}"
    (tmp / f"a-{name}.yaml").write_text(client_conf(case, b_port))
    (tmp / f"b-{name}.yaml").write_text(telemetry_for(case))
    bus = ["--nats", nats] if ship == "bus" else []
    b = [py, me, "sidecar", "--config", str(tmp / f"b-{name}.yaml"), "--inbound", f"127.0.0.1:{b_port}",
         "--app-port", str(ORIGIN), "--name", HOST, *bus]  # fmt: skip
    a = [py, me, "sidecar", "--config", str(tmp / f"a-{name}.yaml"), "--outbound", f"127.0.0.1:{a_port}",
         "--name", "client", *bus]  # fmt: skip
    return [(b, b_port), (a, a_port)]


@dataclass
class Run:
    """One wrk run of a setting: throughput, each sidecar's CPU us per request, the collector's CPU."""

    rps: float
    cpu_a: float
    cpu_b: float
    tel_per_k: float  # meshbus-telemetry: vCPU per 1,000 rps over the run (its tail included)
    errors: int

    @property
    def cpu(self) -> float:
        return self.cpu_a + self.cpu_b


def measure(
    pids: list[int], tel_pid: int, port: int, duration: int, rate: int, tmp: Path, spies: Any = None
) -> Run:
    """wrk for ``duration`` s (or h2load at ``rate`` requests/s), then ``TAIL_S`` more: the shipper's
    batch of the run's last second (and the collector's work on it) belongs to the run; both sides
    of a pair get the same tail."""
    before = [cpu_seconds(p) for p in pids]
    tel_before = cpu_seconds(tel_pid)
    rps, errors = run_rate(port, duration, rate, tmp) if rate else run_wrk(port, duration, None)[::2]
    time.sleep(TAIL_S)
    for spy, out in spies or []:
        spy.wait()
        print(f"    {out.name}: " + "; ".join(f"{share:.1f}% {fn}" for fn, share in top_self(out)))
    requests = max(1.0, rps * duration)
    cpu_b, cpu_a = ((cpu_seconds(p) - t) * 1e6 / requests for p, t in zip(pids, before, strict=True))
    tel = cpu_seconds(tel_pid) - tel_before
    # vCPU per 1,000 rps: CPU seconds per second of load, per thousand requests per second
    per_k = (tel / duration) / (rps / 1000) if rps else float("nan")
    return Run(rps, cpu_a, cpu_b, per_k, errors)


def measure_together(sides: list[tuple[list[int], int]], tel_pid: int, duration: int) -> list[Run]:
    """Both chains of a pair loaded at once, each by its own wrk (``--method together``): the same
    machine noise falls on both in the same seconds. The collector's CPU is the pair's, so it is
    given to both runs (not per setting: it cannot be split between them)."""
    from concurrent.futures import ThreadPoolExecutor

    before = [[cpu_seconds(p) for p in pids] for pids, _ in sides]
    tel_before = cpu_seconds(tel_pid)
    with ThreadPoolExecutor(len(sides)) as pool:
        results = list(pool.map(lambda side: run_wrk(side[1], duration, None), sides))
    time.sleep(TAIL_S)
    tel = cpu_seconds(tel_pid) - tel_before
    out = []
    for (pids, _), b, (rps, _cpu, errors) in zip(sides, before, results, strict=True):
        requests = max(1.0, rps * duration)
        cpu_b, cpu_a = ((cpu_seconds(p) - t) * 1e6 / requests for p, t in zip(pids, b, strict=True))
        total_rps = sum(r[0] for r in results)
        per_k = (tel / duration) / (total_rps / 1000) if total_rps else float("nan")
        out.append(Run(rps, cpu_a, cpu_b, per_k, errors))
    return out


def run_rate(port: int, duration: int, rate: int, tmp: Path, conns: int = 10) -> tuple[float, int]:
    """h2load at ``rate`` requests/s over ``conns`` connections for ``duration`` s: (rps done, errors)."""
    logs = [tmp / f"h2load-{i}.log" for i in range(conns)]
    procs = start_h2load(port, rate // conns, rate // conns * duration, logs)
    for p in procs:
        p.wait(duration * 3 + 10)
    ok = 0
    for log in logs:
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            ok += len(parts) >= 2 and parts[1].startswith("2")
    return ok / duration, rate // conns * conns * duration - ok  # errors: non-2xx and never answered


def pair_order(rnd: int, k: int, setting: tuple[str, str]) -> list[tuple[str, str]]:
    """off and ``setting`` next to each other, off first in every other pair (a drift in the
    machine's load weighs on both sides alike)."""
    off = ("off", setting[1])
    return [off, setting] if (rnd + k) % 2 == 0 else [setting, off]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sidecar"]:
        return sidecar_main(argv[1:])
    if argv[:1] == ["receiver"]:
        return receiver_main(int(argv[1]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--only", default="", help=f"comma list of: {','.join(CASES[1:])} (off always runs)")
    ap.add_argument("--ship", default=",".join(SHIPPING), help="comma list of: local,bus")
    ap.add_argument("--method", default="paired", choices=("paired", "together"),
                    help="paired: off and the setting one after the other; together: both loaded at once")  # fmt: skip
    ap.add_argument("--rate", type=int, default=0, help="h2load at this many requests/s, not wrk flat out")
    ap.add_argument("--spans", default="otlp", choices=("otlp", "file"), help="meshbus-telemetry's span sink")
    ap.add_argument("--ingest-only", action="store_true", help="only the replica's ingest capacity")
    ap.add_argument("--profile", default="", help="record both proxies with py-spy into this folder")
    args = ap.parse_args(argv)
    if args.method == "together" and (args.rate or args.profile):
        print(
            "--method together loads both chains flat out with wrk: not with --rate or --profile",
            file=sys.stderr,
        )
        return 2
    if args.ingest_only:
        ingest_capacity()
        return 0
    missing = [
        t for t in ("wrk", "nginx", "taskset", *(["h2load"] if args.rate else [])) if shutil.which(t) is None
    ]
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install -y wrk nginx util-linux)", file=sys.stderr
        )
        return 2
    from meshbus.bus.embedded import EmbeddedNats

    tmp = scratch_dir("meshbus-bench-telemetry-")
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    only = args.only.split(",") if args.only else list(CASES[1:])
    ships = args.ship.split(",")
    unknown = set(only) - set(CASES[1:]) | set(ships) - set(SHIPPING)
    if unknown:
        print(f"unknown case or shipping: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    settings = [(c, s) for c in CASES if c in only for s in SHIPPING if s in ships]
    every = [(c, s) for c in CASES if c == "off" or c in only for s in SHIPPING if s in ships]
    runs: dict[tuple[str, str], list[Run]] = {r: [] for r in every}
    pairs: dict[tuple[str, str], list[tuple[Run, Run]]] = {r: [] for r in settings}  # (off, setting)
    nats = EmbeddedNats(port=0, store_dir=str(tmp / "nats"))
    nats.start()
    if nats.pid is not None:  # beside the load generator, off the proxies' core
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(nats.pid)], check=False, capture_output=True)
    sink = ["--otlp-endpoint", f"http://127.0.0.1:{OTLP_PORT}/v1/traces"] if args.spans == "otlp" else [
        "--spans-file", str(tmp / "spans.jsonl")]  # fmt: skip
    telemetry = [sys.executable, "-m", "meshbus.telemetry", "--nats", nats.url, "--host", "127.0.0.1",
                 "--metrics-port", str(TEL_PORT), *sink, "--log-level", "warning"]  # fmt: skip
    load = f"h2load at {args.rate:,} rps" if args.rate else "wrk"
    print(f"bench dir {tmp}; {args.rounds} rounds x {load} {args.duration}s (+{TAIL_S}s tail); off next to each of "
          f"{', '.join(f'{c}/{s}' for c, s in settings)}; spans to {args.spans}")  # fmt: skip
    me = str(Path(__file__).resolve())
    try:
        with ExitStack() as stack:
            stack.enter_context(
                process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log")
            )
            stack.enter_context(
                process([sys.executable, me, "receiver", str(OTLP_PORT)], 0, OTLP_PORT, tmp / "otlp.log")
            )
            tel_pid = stack.enter_context(process(telemetry, 0, TEL_PORT, tmp / "telemetry.log"))
            procs: dict[tuple[str, str], tuple[list[int], int]] = {}
            for i, (case, ship) in enumerate(every):
                cmds = chain(tmp, case, ship, nats.url, i)
                pids = [stack.enter_context(process(cmd, 1, port, tmp / f"{case}-{ship}-{j}.log"))
                        for j, (cmd, port) in enumerate(cmds)]  # fmt: skip
                procs[(case, ship)] = (pids, cmds[1][1])
                run_wrk(cmds[1][1], 1, None)  # warm-up: pools, caches, label sets
            for rnd in range(args.rounds):
                for k, setting in enumerate(settings):
                    got: dict[tuple[str, str], Run] = {}
                    if args.method == "together":
                        both = [("off", setting[1]), setting]
                        for which, r in zip(
                            both,
                            measure_together([procs[w] for w in both], tel_pid, args.duration),
                            strict=True,
                        ):
                            got[which] = r
                            runs[which].append(r)
                            _print_run(rnd, which, r)
                        pairs[setting].append((got[both[0]], got[setting]))
                        continue
                    for which in pair_order(rnd, k, setting):
                        pids, port = procs[which]
                        name = f"{which[0]}-{which[1]}-r{rnd + 1}"
                        spies = _spy(args.profile, name, pids, args.duration) if args.profile else None
                        r = got[which] = measure(pids, tel_pid, port, args.duration, args.rate, tmp, spies)
                        runs[which].append(r)
                        _print_run(rnd, which, r)
                    pairs[setting].append((got[("off", setting[1])], got[setting]))
            exported = _exported(TEL_PORT)
    finally:
        nats.cleanup()
    report(runs, pairs, args.method)
    print(f"meshbus-telemetry: spans exported {exported} ({args.spans})")
    ingest_capacity()
    return 1 if any(r.errors for rs in runs.values() for r in rs) else 0


def _print_run(rnd: int, which: tuple[str, str], r: Run) -> None:
    print(f"  round {rnd + 1} {which[0] + '/' + which[1]:17s} {r.rps:9,.0f} rps  cpu {r.cpu:6.1f} us/req "
          f"(A {r.cpu_a:.1f} + B {r.cpu_b:.1f})  meshbus-telemetry {r.tel_per_k:.4f} vCPU per 1k rps  "
          f"errors {r.errors}", flush=True)  # fmt: skip


def _exported(port: int) -> str:
    """meshbus-telemetry's spans exported and dropped (the spans did reach the sink, all of them)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    exported = [ln.split()[-1] for ln in lines if ln.startswith("meshbus_telemetry_spans_exported_total")]
    dropped = [
        ln.split()[-1] for ln in lines if ln.startswith('meshbus_telemetry_dropped_total{signal="spans"')
    ]
    return f"{exported[0] if exported else '?'}, dropped {dropped[0] if dropped else 0}"


def receiver_main(port: int) -> int:
    """An OTLP/HTTP receiver that takes each request and keeps nothing (the tracing backend)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    return 0


def _spy(
    folder: str, name: str, pids: list[int], duration: int
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = []
    for pid, side in zip(pids, "ba", strict=True):
        path = Path(folder) / f"{name}-{side}.txt"
        cmd = [spy, "record", "--native", "--rate", "500", "-p", str(pid), "-d", str(duration), "-f", "raw", "-o", str(path)]  # fmt: skip
        out.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return out


def top_self(path: Path, n: int = 12) -> list[tuple[str, float]]:
    """The functions with the most own samples in a py-spy raw profile, as (name, % of samples)."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1].split(" (")[0]
        own[frame] += int(count)
        total += int(count)
    return [(fn, 100 * c / total) for fn, c in own.most_common(n)] if total else []


def ingest_capacity(n: int = 300) -> float:
    """CPU seconds one replica spends decoding and merging one 120-series batch."""
    import time

    from meshbus.bus import codec
    from meshbus.bus.schemas.telemetry import FamilyDelta, MetricBatch, Source
    from meshbus.telemetry import fields
    from meshbus.telemetry.collector.store import MetricStore
    from meshbus.telemetry.metrics import ISTIO_DEFAULT_BUCKETS

    names = list(fields.ISTIO_REQUEST_LABELS)
    families = []
    for name, kind in (("istio_requests_total", "counter"), ("istio_request_duration_milliseconds", "histogram"),
                       ("istio_request_bytes", "histogram"), ("istio_response_bytes", "histogram")):  # fmt: skip
        samples: list[list[object]] = []
        for peer in range(10):
            for code in ("200", "404", "503"):
                values = {n: "unknown" for n in names} | {"reporter": "destination", "response_code": code,
                                                          "source_workload": f"caller{peer}", "response_flags": "-"}  # fmt: skip
                lv = [values[n] for n in names]
                samples.append(
                    [lv, 5] if kind == "counter" else [lv, [1] * (len(ISTIO_DEFAULT_BUCKETS) + 1), 5.0]
                )
        buckets = [] if kind == "counter" else list(ISTIO_DEFAULT_BUCKETS)
        families.append(FamilyDelta(name, kind, "help", names, buckets, samples))
    data, headers = codec.encode(MetricBatch(Source("n0"), 1, families))
    store = MetricStore()
    t = time.process_time()
    for i in range(n):
        batch = codec.decode(data, headers, MetricBatch)
        store.ingest(MetricBatch(Source(f"n{i % 100}"), i, batch.families), 1000.0 + i * 0.01)
    per_batch = (time.process_time() - t) / n
    print(f"one replica: {per_batch * 1e3:.2f} ms CPU per 120-series batch ({len(data)} bytes): "
          f"~{1 / per_batch:,.0f} such sidecars reporting every second per replica at 100% of a core")  # fmt: skip
    return per_batch


def _spread(xs: list[float], fmt: str = "+.1%") -> str:
    return f"{statistics.median(xs):{fmt}} [{min(xs):{fmt}} .. {max(xs):{fmt}}]"


def report(
    runs: dict[tuple[str, str], list[Run]],
    pairs: dict[tuple[str, str], list[tuple[Run, Run]]],
    method: str = "paired",
) -> None:
    print()
    print("every run of each setting, median [min-max]:")
    print(
        "| setting | runs | rps | CPU us/req A+B | A (client) | B (server) | meshbus-telemetry vCPU per 1k rps | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (case, ship), rs in runs.items():
        print(f"| {case}/{ship} | {len(rs)} | {med([r.rps for r in rs])} | {med([r.cpu for r in rs])} "
              f"| {med([r.cpu_a for r in rs])} | {med([r.cpu_b for r in rs])} "
              f"| {med([r.tel_per_k for r in rs])} | {sum(r.errors for r in rs)} |")  # fmt: skip
    print()
    how = "its pair loaded together" if method == "together" else "the adjacent pair"
    print(f"cost against off with the same shipping, per round from {how}, median [min .. max]:")
    print(
        "| setting | CPU per request (A+B) | us | throughput lower | meshbus-telemetry vCPU per 1k rps (setting) | goal |"
    )
    print("|---|---|---|---|---|---|")
    for (case, ship), ps in pairs.items():
        cpu = [s.cpu / o.cpu - 1 for o, s in ps]
        us = [s.cpu - o.cpu for o, s in ps]
        rps = [1 - s.rps / o.rps for o, s in ps]
        goal = GOALS.get(case)
        print(f"| {case}/{ship} | {_spread(cpu)} | {_spread(us, '+.1f')} | {_spread(rps)} "
              f"| {_spread([s.tel_per_k for _, s in ps], '.4f')} | {f'< {goal:g}% apart' if goal else '-'} |")  # fmt: skip
    off_local, off_bus = runs.get(("off", "local")), runs.get(("off", "bus"))
    if off_local and off_bus:
        lo, bu = statistics.median(r.cpu for r in off_local), statistics.median(r.cpu for r in off_bus)
        print(
            f"off/bus vs off/local (medians of all their runs, not paired): CPU per request {bu / lo - 1:+.1%}"
        )
    print(
        "goals (issue 13): on-1/bus (telemetry fully on, shipped) < 5% from off, on-100 < 15%; "
        "meshbus-telemetry < 0.02 vCPU per 1,000 mesh rps (Mixer: 0.6)"
    )


if __name__ == "__main__":
    sys.exit(main())
