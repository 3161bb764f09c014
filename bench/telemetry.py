"""Telemetry's cost, per configuration, side by side: per-request CPU of both sidecars and throughput.

    .venv/bin/python bench/telemetry.py [--duration 5] [--rounds 3] [--only off,on-1] [--ship local,bus]

Chain: wrk -> proxy A (client sidecar, outbound) -> proxy B (server sidecar, inbound) -> nginx origin,
plaintext (bench/mtls.py prices mTLS). Load generator and origin on CPU 0, both proxies on CPU 1
(bench/run.py's set-up); every (case, shipping) pair once per round, rounds interleaved; medians
[min-max].

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
- bus:   as in mesh mode: metric deltas every second, spans and access logs, over a real nats-server
         to a real meshbus-telemetry (spans to a JSON-lines file, logs into its JetStream stream),
         which also runs on CPU 0.

Reported: throughput and CPU per request of both proxies (``/proc/<pid>/stat`` user+sys over the wrk
run: it suffers less from a busy machine than throughput), each case's CPU delta against off (same
shipping, and off/local) in us per request and %, throughput ratios, and meshbus-telemetry's CPU per
1,000 mesh requests per second (Mixer cost 0.6 vCPU; the goal is < 0.02). Needs wrk, nginx, taskset.
Then one replica's capacity: the CPU to decode and merge one sidecar's batch (120 series: a sidecar
talking to 10 peers, 3 response codes each), and so how many sidecars reporting every second one
replica keeps up with (``--ingest-only`` runs just that part).

``--profile DIR``: py-spy (``--native``: compiled modules show as their C functions) records both
proxies during each measured run into DIR (``<case>-<ship>-<a|b>.txt``, py-spy's raw format) and the
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
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py next to this file
from run import HOST, ORIGIN, Result, cpu_seconds, med, nginx_conf, process, run_wrk

A_PORT, B_PORT, TEL_PORT = 18201, 18202, 18203

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


def client_conf(case: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {HOST}, namespace: default}}
spec:
  hosts: [{HOST}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {B_PORT}}}, labels: {{app: {HOST}, version: v1}}, serviceAccount: origin}}]
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
    """An access-log sink that takes the records and keeps none (``--ship local``)."""

    async def write_records(self, records: list[Any]) -> None:
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
        resource = {"service.name": f"{args.name}.default"}
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


def chain(tmp: Path, case: str, nats: str) -> list[tuple[list[str], int]]:
    py, me = sys.executable, str(Path(__file__).resolve())
    (tmp / f"a-{case}.yaml").write_text(client_conf(case))
    (tmp / f"b-{case}.yaml").write_text(telemetry_for(case))
    ship = ["--nats", nats] if nats else []
    b = [py, me, "sidecar", "--config", str(tmp / f"b-{case}.yaml"), "--inbound", f"127.0.0.1:{B_PORT}",
         "--app-port", str(ORIGIN), "--name", HOST, *ship]  # fmt: skip
    a = [py, me, "sidecar", "--config", str(tmp / f"a-{case}.yaml"), "--outbound", f"127.0.0.1:{A_PORT}",
         "--name", "client", *ship]  # fmt: skip
    return [(b, B_PORT), (a, A_PORT)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sidecar"]:
        return sidecar_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help=f"comma list of: {','.join(CASES)}")
    ap.add_argument("--ship", default=",".join(SHIPPING), help="comma list of: local,bus")
    ap.add_argument("--ingest-only", action="store_true", help="only the replica's ingest capacity")
    ap.add_argument("--profile", default="", help="record both proxies with py-spy into this folder")
    args = ap.parse_args(argv)
    if args.ingest_only:
        ingest_capacity()
        return 0
    missing = [t for t in ("wrk", "nginx", "taskset") if shutil.which(t) is None]
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install -y wrk nginx util-linux)", file=sys.stderr
        )
        return 2
    from meshbus.bus.embedded import EmbeddedNats

    tmp = Path(tempfile.mkdtemp(prefix="meshbus-bench-telemetry-"))
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    only = args.only.split(",") if args.only else list(CASES)
    unknown = set(only) - set(CASES) | set(args.ship.split(",")) - set(SHIPPING)
    if unknown:
        print(f"unknown case or shipping: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    runs = [(c, s) for c in CASES if c in only for s in SHIPPING if s in args.ship.split(",")]
    results = {r: Result() for r in runs}
    collector: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    nats = EmbeddedNats(port=0, store_dir=str(tmp / "nats"))
    nats.start()
    telemetry = [sys.executable, "-m", "meshbus.telemetry", "--nats", nats.url, "--host", "127.0.0.1",
                 "--metrics-port", str(TEL_PORT), "--spans-file", str(tmp / "spans.jsonl"), "--log-level", "warning"]  # fmt: skip
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s; "
          f"{', '.join(f'{c}/{s}' for c, s in runs)}")  # fmt: skip
    try:
        with (
            process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"),
            process(telemetry, 0, TEL_PORT, tmp / "telemetry.log") as tel_pid,
        ):
            for rnd in range(args.rounds):
                for case, ship in runs:
                    with ExitStack() as stack:
                        pids = [
                            stack.enter_context(process(cmd, 1, port, tmp / f"{case}-{ship}-{i}.log"))
                            for i, (cmd, port) in enumerate(
                                chain(tmp, case, nats.url if ship == "bus" else "")
                            )
                        ]
                        run_wrk(A_PORT, 1, None)  # warm-up: pools, caches, label sets
                        before_each = [cpu_seconds(p) for p in pids]
                        tel_before = cpu_seconds(tel_pid)
                        spies = (
                            _spy(args.profile, f"{case}-{ship}", pids, args.duration) if args.profile else []
                        )
                        rps, _, errors = run_wrk(A_PORT, args.duration, None)
                        for spy, out in spies:
                            spy.wait()
                            print(
                                f"    {out.name}: "
                                + "; ".join(f"{share:.1f}% {fn}" for fn, share in top_self(out))
                            )
                        requests = max(1.0, rps * args.duration)
                        each = [
                            (cpu_seconds(p) - b) * 1e6 / requests
                            for p, b in zip(pids, before_each, strict=True)
                        ]
                        cpu_us = sum(each)
                        tel_cpu = cpu_seconds(tel_pid) - tel_before
                    res = results[(case, ship)]
                    res.rps.append(rps)
                    res.cpu_us.append(cpu_us)
                    res.errors += errors
                    # vCPU per 1,000 rps: CPU seconds per second, per thousand requests per second
                    per_k = (tel_cpu / args.duration) / (rps / 1000) if rps else float("nan")
                    collector[(case, ship)].append(per_k)
                    print(f"  round {rnd + 1} {case + '/' + ship:17s} {rps:9,.0f} rps  cpu {cpu_us:6.1f} us/req "
                          f"(A {each[1]:.1f} + B {each[0]:.1f})  meshbus-telemetry {per_k:.4f} vCPU per 1k rps  errors {errors}",
                          flush=True)  # fmt: skip
    finally:
        nats.cleanup()
    report(results, collector)
    ingest_capacity()
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


def _delta(results: dict[tuple[str, str], Result], run: tuple[str, str], base: tuple[str, str]) -> str:
    if base not in results or run == base:
        return "-"
    cpu, cpu0 = statistics.median(results[run].cpu_us), statistics.median(results[base].cpu_us)
    rps, rps0 = statistics.median(results[run].rps), statistics.median(results[base].rps)
    return f"{cpu - cpu0:+.1f} us ({100 * (cpu / cpu0 - 1):+.1f}%), rps x{rps / rps0:.3f}"


def report(results: dict[tuple[str, str], Result], collector: dict[tuple[str, str], list[float]]) -> None:
    print()
    print("| case | rps median [min-max] | CPU us/req (A+B) | vs off, same shipping: CPU, rps | "
          "vs off/local | meshbus-telemetry vCPU per 1k rps | errors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for (case, ship), r in results.items():
        tel = med(collector[(case, ship)]) if ship == "bus" else "-"
        print(f"| {case}/{ship} | {med(r.rps)} | {med(r.cpu_us)} | {_delta(results, (case, ship), ('off', ship))} "
              f"| {_delta(results, (case, ship), ('off', 'local'))} | {tel} | {r.errors} |")  # fmt: skip
    base = ("off", "local")
    if base in results:
        for (case, ship), r in results.items():
            goal = GOALS.get(case)
            if goal is None:
                continue
            drop = 100 * (1 - statistics.median(r.rps) / statistics.median(results[base].rps))
            cpu = 100 * (statistics.median(r.cpu_us) / statistics.median(results[base].cpu_us) - 1)
            print(f"{case}/{ship} vs off/local: throughput {drop:+.1f}% below, CPU per request {cpu:+.1f}% "
                  f"(goal: < {goal:g}% apart)")  # fmt: skip
    print("goal (issue 13): meshbus-telemetry < 0.02 vCPU per 1,000 mesh rps (Mixer: 0.6)")


if __name__ == "__main__":
    sys.exit(main())
