"""Convergence: time from a config write (KV put) to every affected proxy having ACKed it.

    .venv/bin/python bench/convergence.py [--agents 10,100,1000] [--services 100] [--changes 20] [--json]

Three real processes besides NATS: this observer (writes config, listens to every ACK), one
``meshbus-discovery`` process, and one fleet process running N real agents (`meshbus.proxy.mesh.agent`
with the real `build_runtime`; the swap is a no-op, no listeners) over ``--services`` services.
Agent i is a workload of service ``s{i % services}``; every service has a DestinationRule with
subsets v1/v2 and a VirtualService (weights are flipped by each change).

Two scenarios per fleet size:
- ``mesh-wide``: no Sidecar, every proxy may call every service (Istio's default), so a change to
  one service concerns every proxy.
- ``scoped``: a Sidecar per service limits egress to the next 3 services, so a change to one
  service concerns only the proxies of the 3 services that call it (~3% of the fleet).
A change is one KV put of one VirtualService. Converged = every concerned proxy ACKed a newer
version (the observer hears the ACKs on ``xds.ack.*``). Reported per scenario: p50/p99/max over
``--changes`` changes, concerned proxies, ACKs from proxies that were *not* concerned (must be 0),
and discovery's own push-cycle time (from its health endpoint).

Simulation caveats, all because N proxies share one process and one core here: discovery runs with
``--expiry 600`` (a fleet busy rebuilding N runtimes, ~30 s for 1,000, cannot keep every 1 s
heartbeat; expiry has its own test), nats-server gets a long write deadline, and the fleet shares one `ResourceCache` between its agents (each real proxy has its own: the only
difference is that the changed resource is validated once instead of once per agent; every agent
still rebuilds its own runtime). On this 2-core machine discovery and the fleet get one core each
(taskset when available); the fleet's rebuilds are serialized on that core, unlike real proxies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from scratch import scratch_dir

from meshbus.bus import BusConnection, BusSettings, codec
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.kv import BucketConfig, KeyValueStore
from meshbus.bus.rpc import request
from meshbus.bus.schemas import Health, HealthRequest
from meshbus.bus.schemas.config import StoredConfig, encode_value
from meshbus.bus.schemas.discovery import SnapshotAck

CALLS = 3  # scoped scenario: each service calls the next CALLS services


def node_id(i: int, services: int) -> str:
    return f"s{i % services:03d}-v1-{i:04d}"


def service_of(i: int, services: int) -> str:
    return f"s{i % services:03d}"


# -- config --------------------------------------------------------------------------------------


def stored(kind: str, name: str, spec: dict[str, Any]) -> StoredConfig:
    return StoredConfig("networking.istio.io/v1", kind, "default", name, spec, updated="2026-11-27T00:00:00Z")


def vs_spec(svc: str, weight_v1: int) -> dict[str, Any]:
    route = [{"destination": {"host": svc, "subset": "v1"}, "weight": weight_v1}]
    if weight_v1 < 100:
        route.append({"destination": {"host": svc, "subset": "v2"}, "weight": 100 - weight_v1})
    return {"hosts": [svc], "http": [{"route": route, "timeout": "2s"}]}


def dr_spec(svc: str) -> dict[str, Any]:
    return {
        "host": svc,
        "trafficPolicy": {"connectionPool": {"http": {"http1MaxPendingRequests": 100}}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    }


def sidecar_spec(i: int, services: int) -> dict[str, Any]:
    hosts = [f"./s{(i + k) % services:03d}" for k in range(1, CALLS + 1)]
    return {"workloadSelector": {"labels": {"app": f"s{i:03d}"}}, "egress": [{"hosts": hosts}]}


async def write_config(kv: KeyValueStore, services: int, scoped: bool) -> None:
    for i in range(services):
        svc = f"s{i:03d}"
        await kv.put(
            f"DestinationRule.default.{svc}", encode_value(stored("DestinationRule", svc, dr_spec(svc)))
        )
        await kv.put(
            f"VirtualService.default.{svc}", encode_value(stored("VirtualService", svc, vs_spec(svc, 100)))
        )
        if scoped:
            await kv.put(
                f"Sidecar.default.{svc}", encode_value(stored("Sidecar", svc, sidecar_spec(i, services)))
            )


# -- the fleet process -----------------------------------------------------------------------------


async def run_fleet(args: argparse.Namespace) -> None:
    from meshbus.proxy.mesh.agent import AgentSettings, MeshAgent, ResourceCache

    class TimedAgent(MeshAgent):
        """The real agent; only records how long each snapshot took to handle (decode excluded)."""

        times: list[float]

        async def handle(self, snap: Any) -> None:
            t = time.perf_counter()
            await super().handle(snap)
            self.times.append(time.perf_counter() - t)

    n, services = args.agents, args.services
    buses = []
    for c in range(max(1, min(16, n // 50))):
        bus = BusConnection(BusSettings(url=args.nats, name=f"fleet-{c}", root=args.root))
        await bus.connect()
        buses.append(bus)
    cache = ResourceCache(shared=True)
    agents = []
    for i in range(n):
        svc = service_of(i, services)
        settings = AgentSettings(
            service=svc,
            labels={"app": svc, "version": "v1"},
            node_id=node_id(i, services),
            address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            app_port=9080,
            inbound_port=15006,
            fetch_timeout=5.0,
        )
        agent = TimedAgent(buses[i % len(buses)], settings, lambda rt: None, cache=cache)
        agent.times = []
        agents.append(agent)
    # All at once: discovery is started after them, so it pushes one full snapshot to each
    # instead of re-pushing the growing fleet after every registration.
    await asyncio.gather(*(a.start() for a in agents))
    await asyncio.gather(*(a.ready.wait() for a in agents))
    for a in agents:
        a.times.clear()
    # One process holds N proxies' runtimes; a real proxy holds one. Freezing the startup heap keeps
    # the garbage collector from re-scanning N runtimes on every collection (it would charge each
    # proxy with the whole fleet's heap).
    gc.collect()
    gc.freeze()
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    times = sorted(t for a in agents for t in a.times)
    stats = {"applies": len(times)}
    if times:
        stats.update(
            mean_ms=statistics.fmean(times) * 1000, p99_ms=times[int(0.99 * (len(times) - 1))] * 1000
        )
    print("STATS " + json.dumps(stats), flush=True)
    for a in agents:
        await a.stop(deregister=False)
    for bus in buses:
        await bus.close()


# -- the observer ----------------------------------------------------------------------------------


@dataclass
class Observer:
    acked: dict[str, int] = field(default_factory=dict)
    """node -> highest version ACKed."""
    acked_at: dict[str, float] = field(default_factory=dict)
    nacks: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    pushed_at: dict[str, float] = field(default_factory=dict)
    """node -> when the observer saw the last snapshot published for it."""

    async def on_snapshot(self, msg: Any) -> None:
        self.pushed_at[msg.subject.rsplit(".", 1)[1]] = time.perf_counter()

    async def on_ack(self, msg: Any) -> None:
        ack = codec.decode(msg.data, msg.headers, SnapshotAck)
        if ack.error:
            self.nacks += 1
            if self.nacks <= 3:
                print(f"NACK from {ack.node}: {ack.error}", file=sys.stderr)
            return
        if ack.version > self.acked.get(ack.node, 0):
            self.acked[ack.node] = ack.version
            self.acked_at[ack.node] = time.perf_counter()
            self.changed.set()


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


async def wait_quiet(obs: Observer, nodes: list[str], quiet: float, timeout: float) -> None:
    """Every node ACKed something and no ACK arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obs.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(obs.changed.wait(), quiet)
            continue
        if all(n in obs.acked for n in nodes):
            return
    missing = [n for n in nodes if n not in obs.acked]
    raise RuntimeError(f"fleet did not settle: {len(missing)} proxies never ACKed (e.g. {missing[:3]})")


async def scenario(url: str, n: int, services: int, scoped: bool, changes: int, root: str) -> dict[str, Any]:
    ops = BusConnection(BusSettings(url=url, name="bench", root=root))
    await ops.connect()
    kv = KeyValueStore(ops, BucketConfig(ops.subjects.kv_bucket("config"), history=64))
    await write_config(kv, services, scoped)
    obs = Observer()
    await ops.subscribe(ops.subjects.xds_ack_all(), obs.on_ack)
    await ops.subscribe(ops.subjects.xds_snapshot_all(), obs.on_snapshot)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    fleet = await asyncio.create_subprocess_exec(
        *pin(0), sys.executable, __file__, "fleet", "--nats", url, "--root", root,
        "--agents", str(n), "--services", str(services),
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    await asyncio.sleep(1.0 + n / 500)  # let the fleet register first (see run_fleet)
    disc = await asyncio.create_subprocess_exec(
        *pin(1), sys.executable, "-m", "meshbus.control.discovery", "--nats", url, "--subject-root", root,
        "--warmup", "1.5", "--expiry", "600", "--log-level", os.environ.get("BENCH_DISCOVERY_LOG", "warning"),
        env=env,
    )  # fmt: skip
    fleet_stats: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        assert fleet.stdout is not None
        line = await fleet.stdout.readline()
        if line.strip() != b"READY":
            raise RuntimeError(f"fleet failed to start ({line!r})")
        nodes = [node_id(i, services) for i in range(n)]
        await wait_quiet(obs, nodes, quiet=1.0, timeout=120)
        startup = time.perf_counter() - started
        have = sorted({i % services for i in range(n)})
        targets = [
            k for k in have if not scoped or all((k - c) % services in have for c in range(1, CALLS + 1))
        ]
        times, concerned_counts, collateral, cycle_ms = [], [], 0, []
        weights: dict[str, int] = {}
        delivered: list[float] = []
        for c in range(changes):
            k = targets[c % len(targets)]
            svc = f"s{k:03d}"
            callers = {(k - d) % services for d in range(1, CALLS + 1)} if scoped else set(range(services))
            concerned = [node_id(i, services) for i in range(n) if i % services in callers]
            others = [x for x in nodes if x not in set(concerned)]
            before = {x: obs.acked.get(x, 0) for x in nodes}
            weight = weights[svc] = 50 if weights.get(svc, 100) == 100 else 100  # always a real change
            t0 = time.perf_counter()
            await kv.put(
                f"VirtualService.default.{svc}",
                encode_value(stored("VirtualService", svc, vs_spec(svc, weight))),
            )
            while True:
                obs.changed.clear()  # before the check: an ACK arriving after it sets the event again
                if all(obs.acked.get(x, 0) > before[x] for x in concerned):
                    break
                await asyncio.wait_for(obs.changed.wait(), 60 + n * 0.1)
            times.append(max(obs.acked_at[x] for x in concerned) - t0)
            delivered.append(max(obs.pushed_at.get(x, t0) for x in concerned) - t0)
            if os.environ.get("BENCH_DEBUG"):
                offs = sorted(obs.acked_at[x] - t0 for x in concerned)
                print(
                    f"change {c}: first ACK {offs[0] * 1000:.1f} ms, last {offs[-1] * 1000:.1f} ms",
                    file=sys.stderr,
                )
            concerned_counts.append(len(concerned))
            await asyncio.sleep(0.25)  # let anything stray arrive before counting it
            collateral += sum(1 for x in others if obs.acked.get(x, 0) > before[x])
            health = await request(ops, ops.subjects.endpoint("discovery", "health"), HealthRequest(), Health)
            cycle_ms.append(float(health.details.get("last_cycle_ms", "nan")))
        times.sort()
        delivered.sort()
        result: dict[str, Any] = {
            "agents": n,
            "services": services,
            "scenario": "scoped" if scoped else "mesh-wide",
            "concerned": statistics.median(concerned_counts),
            "p50_ms": statistics.median(times) * 1000,
            "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] * 1000,
            "max_ms": times[-1] * 1000,
            "delivered_p50_ms": statistics.median(delivered) * 1000,
            "delivered_p99_ms": delivered[min(len(delivered) - 1, round(0.99 * (len(delivered) - 1)))] * 1000,
            "discovery_cycle_ms": statistics.median(cycle_ms),
            "collateral_acks": collateral,
            "nacks": obs.nacks,
            "startup_s": startup,
        }
    finally:
        for p in (fleet, disc):
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        assert fleet.stdout is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                async for raw in fleet.stdout:
                    if raw.startswith(b"STATS "):
                        fleet_stats.update(json.loads(raw[6:]))
        for p in (fleet, disc):
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()
        await ops.close()
    result["proxy_apply_mean_ms"] = fleet_stats.get("mean_ms", float("nan"))
    result["proxy_apply_p99_ms"] = fleet_stats.get("p99_ms", float("nan"))
    return result


SERVER_CONF = """
# 1,000 simulated proxies share one core: while their process rebuilds runtimes it reads its
# sockets late. Real proxies are separate processes; give the fleet time instead of cutting it off.
write_deadline: "60s"
max_pending: 536870912
"""


async def run_bench(args: argparse.Namespace) -> None:
    conf = scratch_dir("meshbus-bench-") / "nats.conf"
    conf.write_text(SERVER_CONF)
    server = EmbeddedNats(extra_args=("-c", str(conf)), log_path=args.nats_log)
    url = server.start()
    results = []
    try:
        for n in (int(x) for x in args.agents.split(",")):
            for scoped in [x == "scoped" for x in args.scenarios.split(",")]:
                root = f"bench{n}{'s' if scoped else 'm'}"
                # A mesh-wide change at 1,000 simulated proxies costs 1,000 rebuilds on one core: fewer rounds.
                changes = args.changes if scoped or n < 1000 else min(args.changes, args.changes_large)
                r = await scenario(url, n, args.services, scoped, changes, root)
                results.append(r)
                if not args.json:
                    print(
                        f"{r['agents']:>5} proxies {r['scenario']:<9} concerned {r['concerned']:>5.0f} | "
                        f"all ACKed p50 {r['p50_ms']:8.1f} p99 {r['p99_ms']:8.1f} ms | "
                        f"all delivered p50 {r['delivered_p50_ms']:6.1f} p99 {r['delivered_p99_ms']:6.1f} ms | "
                        f"discovery cycle {r['discovery_cycle_ms']:6.1f} ms | "
                        f"proxy apply {r['proxy_apply_mean_ms']:.1f} ms (p99 {r['proxy_apply_p99_ms']:.1f}) | "
                        f"collateral {r['collateral_acks']} nacks {r['nacks']}",
                        flush=True,
                    )
    finally:
        server.cleanup()
    if args.json:
        print(json.dumps(results, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode")
    fleet = sub.add_parser("fleet", help="(internal) run the simulated agents")
    fleet.add_argument("--nats", required=True)
    fleet.add_argument("--root", required=True)
    fleet.add_argument("--agents", type=int, required=True)
    fleet.add_argument("--services", type=int, default=100)
    p.add_argument("--agents", default="10,100,1000")
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--changes-large", type=int, default=5, help="changes for the mesh-wide 1,000-proxy case")
    p.add_argument("--scenarios", default="mesh-wide,scoped")
    p.add_argument("--nats-log", default=None, help="write nats-server's log here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.mode == "fleet" and os.environ.get("BENCH_PROFILE"):
        import cProfile

        cProfile.runctx(
            "asyncio.run(run_fleet(args))", globals(), {"args": args}, os.environ["BENCH_PROFILE"]
        )
    elif args.mode == "fleet":
        asyncio.run(run_fleet(args))
    else:
        asyncio.run(run_bench(args))


if __name__ == "__main__":
    main()
