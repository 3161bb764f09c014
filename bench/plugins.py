"""Plugin cost, side by side in one run: meshbus-proxy with no filters, one in-process no-op filter,
one in-process filter that reads and sets a header, one remote no-op filter (meshbus-filter-host over
a local nats-server) beside the floor it is weighed against (bare nats-py request/reply on the same
nats-server), and host scaling: a remote filter that burns BURN_MS of CPU per call and one that
waits BURN_MS per call, each served by one host and by two.

    .venv/bin/python bench/plugins.py [--duration 3] [--rounds 10] [--inproc-rounds 30] [--inproc-duration 1]
        [--latency-rounds 3] [--latency-duration 5] [--callgrind [TOP]]

Same set-up as bench/run.py (nginx origin and load generator on CPU 0, the proxy on CPU 1, wrk for
throughput, 10 paced h2load connections for latency at 1,000 req/s). The targets (issue 12): an
in-process no-op < 3 % of throughput, a header filter < 8 %, a remote no-op < +0.5 ms p50 and +1 ms
p99 at 1,000 req/s, two hosts close to twice one host's rate. The issue states the remote target on a
machine where a NATS request/reply from Python costs ~0.2 ms p50; this one is ~2.5x slower, so the
bench measures that reference itself and reads the target as a multiple of it: added p50 < 2.5x and
added p99 < 5x the floor's p50.

Method. The effects sought (3 %) are smaller than the drift of this shared machine between runs a
minute apart (rounds of the earlier method, medians of whole columns over 3 rounds of 5 s per setup,
varied by 15 %), so the setups are measured in adjacent, paired runs:
- In memory first, without sockets (bench/micro.py's loop: the listener, exchange and upstream
  protocol with in-memory transports): the Python time per request through the chain with and without
  each filter. The runs alternate between the setups (``--micro-runs``, each ``--micro-requests``
  requests, CPU time); the cost is taken per run against the "none" run next to it and reported as
  median [min .. max], with the best run of each.
- Throughput: each round starts one proxy per setup (none, in-process no-op, header, remote no-op;
  each on its own port, all on CPU 1, fresh processes every round), warms each up, then runs wrk for
  ``--duration`` seconds on each in turn, the order reversed every other round (A B C D, D C B A...),
  so a drift in the machine's load weighs on both sides of each pair. Per run: req/s and the proxy's
  CPU per request (from /proc; contention hardly changes it, so it is the robust figure), the hosts'
  CPU per request. A setup's cost is taken per round against that round's "none" run, reported as
  median [min .. max] over the rounds; the least disturbed figure (lowest CPU per request of each
  setup over the rounds) is printed too.
- In-process setups, interleaved (``--inproc-rounds``, default 30, of ``--inproc-duration`` 1 s):
  the in-process targets are a few per cent, below the drift of the paired rounds above (their
  in-process costs went from within target to +4.7-11 % between two quiet runs while the in-memory
  cost stayed put), so none / no-op / header are also run against the SAME warm proxies, started once,
  in many short rounds: round r runs them in order rotated by r, reversed every other cycle, so each
  setup runs equally often first, last, before and after each other, and a pair of runs is seconds
  apart. Columns: req/s (wrk, median [min-max] over the rounds, the figure the issue's targets are
  stated in, kept as it was); throughput cost (per round, 1 - setup req/s / that round's none req/s,
  median [min-max]: paired, so the machine's drift between rounds cancels); proxy CPU us/req (the
  proxy's threads' CPU time during the run from /proc/PID/task/*/schedstat, in ns rather than the
  10 ms ticks of /proc/PID/stat, which would be a 1 % step on a 1 s run, divided by req/s x
  duration); CPU per request cost (per round, setup / none - 1). When the proxy is the bottleneck
  (it is: one core, flat out) throughput is 1 / CPU per request, so the two costs agree on a quiet
  machine; under contention throughput also loses what other processes take from CPU 1 during the
  run, while CPU per request hardly moves. Neither flatters the filter: both are paired against
  'none' measured the same way, and the paired-round figures above stay beside them.
- Latency: as throughput, ``--latency-rounds`` rounds of a ``--latency-duration`` h2load run per
  setup at 1,000 req/s (in ``--latency-segments`` runs of fresh h2loads, the first ``--latency-warmup``
  s of each not counted, as bench/run.py measures: the h2loads' start alone put ms-long requests into
  a 5,000-request p99), +p50 / +p99 against the same round's "none". Every participant of the latency
  rounds runs SCHED_FIFO (``--realtime``, the default when chrt may; ``--no-realtime`` to measure as
  normal tasks), as in bench/run.py and bench/mtls.py: the origin, every proxy of the round, every
  filter host and nats-server's threads for the whole round (whichever setup runs: 'none' meets the
  same policies as the remote no-op), the h2loads, and the floor's client and responder; the
  warm-ups before stay normal tasks. Until h70 these runs alone were normal tasks (the remote path's
  nats-server and hosts would have had to be FIFO too, and they were not made so), so their p99s
  measured mostly the Linux scheduler's queueing on this 2-core machine shared with the load
  generator and other work, and the remote path, with four more hops to wake than 'none', met it
  four more times. Three runs each way, alternated (--latency-rounds 2; none, remote no-op and the
  floor): 'none' p99 3.7-81 ms per round as normal tasks, 0.37-0.60 ms FIFO (one round 4.0 ms);
  the floor p50 0.55-0.58 ms normal (one run 1.2-108 ms, the machine taken by other work), 0.43-0.47
  ms FIFO; the remote no-op's added p50, median per run, +0.56 / +0.73 ms normal (+1.12 in the taken
  run), +0.39 / +0.52 / +0.48 ms FIFO; added p99 +1.06 / -35 / -22 ms normal, +0.90 / +1.04 / -0.64
  ms FIFO (a round's p99 still varies by ~1 ms FIFO: 5,000 requests a run). This is the other
  benches' method applied here too (the fix of an inconsistency, not a kinder measure): it measures
  the proxy's and the hops' latency, not the queueing of a shared machine. Each round also runs the
  "nats-floor" (bench/remote_filter.py ``--floor --nats``: bare nats-py ``Client.request`` with the
  remote no-op's call payload, paced at 1,000/s like the h2load runs, to a plain subscription
  answering with the no-op's verdict, on the same nats-server; its client on CPU 1 as the proxy, its
  responder on CPU 0 as the no-op's host) last in the round's order, next to the remote no-op (first
  in reversed rounds), while the round's proxies and hosts run, so drift weighs on both. Every
  setup's +p50 and +p99 are printed in ms and as a multiple of that round's floor p50. Each run also
  prints, for its proxy, its hosts and nats-server, the CPU time and the run-queue wait (schedstat)
  per request: on this shared 2-core machine the wait (other processes holding the CPUs when a hop
  wakes) is often larger than the work, and a remote call has four more hops to wake than 'none';
  and the proxy's user and kernel CPU per request (/proc/PID/stat ticks: 2 us steps on a 5 s run).
- Scaling (one host then two, for two filters; ``--scaling-rounds``, 0 to skip) measures the hosts,
  not the proxy: at BURN_MS a call, one host serves at most ~1/BURN_MS calls a second, far below
  what the proxy forwards, so the proxy is never the bottleneck; the hosts are not pinned. "burn"
  spends BURN_MS of CPU a call: CPU-bound, so on a 2-core machine two hosts share both cores with
  the proxy, nginx, wrk and nats-server and the ratio stays under 2. "wait" sleeps BURN_MS in a plain
  ``def`` hook, which blocks its host's event loop (hosts run with ``--concurrency 1``): a host
  serves ~1/BURN_MS calls a second whatever the cores, so two hosts show the queue group sharing the
  calls. Each run prints each host's share of the wall time on a CPU and waiting in a run queue for
  one (/proc/PID/task/*/schedstat) and says what bounds it: a host busy or runnable nearly all the
  time is CPU-bound; one asleep most of the time is bound by the wait.
``--callgrind [TOP]`` measures nothing else: instructions per request of none / no-op / header in
memory (bench/micro.py's loop under callgrind, 1,200 requests minus 200), and with TOP the functions
each filter adds most to. Both runs pass a hook's first 64 calls, which are all timed; the 1,000 between
them are the steady state, where a plain hook's time is sampled one call in 16 (the adapter's
TIMED_FIRST, TIME_EVERY), as in a proxy serving traffic. It also prints the misses of CPython 3.11's
type attribute cache per request (``_PyType_Lookup``'s calls of ``find_name_in_mro``, ~500
instructions each with the dict lookups): the cache is indexed by the type's version tag and the
name's address, so two attribute lookups by name made at every request that share a slot miss at
every request, and whether they do depends on the build's and the run's memory layout (the same
filters measured +2.0 % / +7.5 % in one recent build and +3.8 % / +9.3 % in another). The request path
therefore makes no lookup by name per request (methods of other types are bound once or called as
mypyc primitives on typed operands): with 'none' and the no-op there is none left (a few every 64
requests, refilling the id pools), and the header filter's own two reads of ``req.headers`` share
one slot, so no layout can make them collide. Start-up and shutdown still miss the cache a few
thousand times more or less from one run to the next (the heap differs after 200 and 1,200
requests), ~1k instructions a request of the whole-process figure: "the request path alone" is the
inclusive cost of the loop's three calls per request (``_ENTRIES``), without them.
``--stages`` stamps each stage of the remote no-op's calls in its proxy and host during the latency
rounds (bench/stages.py, patched in at start-up: nothing of it runs without the flag) and prints the
medians between stages after each such run, with h2load's request start to the call and the call's
end to h2load's response.
``--reference-write [once|first]`` adds "remote-noop-once": the remote no-op with meshbus.bus.direct's
earlier write policy in its proxy and host (bench/write_policy.py; its own filter name, so its own
host), or "remote-noop-first": the current policy without its busy rule, paired like the others, to
weigh the current policy against it in the same run.
``--nats-cpus LIST`` pins nats-server's threads (taskset -a) for the whole run; by default it is not
pinned. The no-op's host sits on CPU 0 with nginx and wrk. The filters are registered as entry points of a
throw-away distribution in the bench directory (no install into the environment).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).parent))

import run
import stages
from run import (
    REALTIME,
    Result,
    check_tools,
    cpu_seconds,
    cpu_user_sys,
    fifo_while,
    latency_samples,
    med,
    meshbus_conf,
    nginx_conf,
    percentiles,
    process,
    realtime_ok,
    run_wrk,
)
from scratch import scratch_dir
from write_policy import ENV, SITECUSTOMIZE

from meshbus.bus.embedded import EmbeddedNats

BURN_MS = 1.0

FILTERS = f"""
import time

from meshbus.plugins import Filter


class Noop(Filter):
    def on_request_headers(self, req):
        return None


class Header(Filter):
    def on_request_headers(self, req):
        req.headers.set("x-bench-agent", req.headers.get("user-agent") or "-")


class Burn(Filter):
    def on_request_headers(self, req):
        end = time.thread_time() + {BURN_MS / 1000}  # CPU, not wall time: a busy host is slower
        while time.thread_time() < end:
            pass


class Wait(Filter):
    def on_request_headers(self, req):
        time.sleep({BURN_MS / 1000})  # a plain def: blocks its host's loop, without burning CPU
"""

PLUGIN = """---
apiVersion: meshbus.io/v1
kind: Plugin
metadata: {{name: bench, namespace: default}}
spec:
  filter: {filter}
  placement: {placement}
  failStrategy: FAIL_CLOSE
  timeout: 2s
"""

SETUPS = {
    "none": None,
    "inproc-noop": ("bench-noop", "IN_PROCESS", 0),
    "inproc-header": ("bench-header", "IN_PROCESS", 0),
    "remote-noop-1host": ("bench-noop", "REMOTE", 1),
    "remote-burn-1host": ("bench-burn", "REMOTE", 1),
    "remote-burn-2hosts": ("bench-burn", "REMOTE", 2),
    "remote-wait-1host": ("bench-wait", "REMOTE", 1),
    "remote-wait-2hosts": ("bench-wait", "REMOTE", 2),
    "remote-noop-once": ("bench-noop-ref", "REMOTE", 1),  # --reference-write; its own subject and host
    "remote-noop-first": ("bench-noop-first", "REMOTE", 1),  # --reference-write first
}
WRITE_POLICY = {"remote-noop-once": "once", "remote-noop-first": "first"}
"""Setups whose proxy and host replace meshbus.bus.direct's write_now (bench/write_policy.py)."""


def install_filters(site: Path) -> None:
    """A distribution with the bench's ``meshbus.filters`` entry points, importable from ``site``,
    and a sitecustomize that applies bench/write_policy.py's ``MESHBUS_BENCH_WRITE``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "meshbus_bench_filters.py").write_text(FILTERS)
    info = site / "meshbus_bench_filters-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: meshbus-bench-filters\nVersion: 0.0.0\n")
    (site / "write_policy.py").write_text((Path(__file__).parent / "write_policy.py").read_text())
    (site / "stages.py").write_text((Path(__file__).parent / "stages.py").read_text())
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE + stages.SITECUSTOMIZE)
    (info / "entry_points.txt").write_text(
        "[meshbus.filters]\nbench-noop = meshbus_bench_filters:Noop\nbench-header = meshbus_bench_filters:Header\n"
        "bench-burn = meshbus_bench_filters:Burn\nbench-wait = meshbus_bench_filters:Wait\n"
        "bench-noop-ref = meshbus_bench_filters:Noop\nbench-noop-first = meshbus_bench_filters:Noop\n"
    )


@contextlib.contextmanager
def filter_hosts(
    n: int,
    nats_url: str,
    env: dict[str, str],
    tmp: Path,
    name: str = "bench-noop",
    cpus: str = "0",
    concurrency: int = 64,
) -> Iterator[list[int]]:
    procs = []
    tmp.mkdir(exist_ok=True)
    try:
        for i in range(n):
            cmd = ["taskset", "-c", cpus, sys.executable, "-m", "meshbus.plugins.remote", "--filter", name,
                   "--nats", nats_url, "--concurrency", str(concurrency), "--log-level", "warning"]  # fmt: skip
            with open(tmp / f"host{i}.log", "wb") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


PAIRED = ("none", "inproc-noop", "inproc-header", "remote-noop-1host")
SCALING = ("remote-burn-1host", "remote-burn-2hosts", "remote-wait-1host", "remote-wait-2hosts")
FLOOR: Final = "nats-floor"
"""The latency rounds' reference: bare nats-py request/reply on the same nats-server (run_floor)."""
CONCURRENCY = {"bench-wait": 1}
"""Hosts' --concurrency by filter (else 64): a waiting host serves one call at a time."""


@dataclass
class Setup:
    """One setup's proxy command line and port, for one round."""

    name: str
    port: int
    cmd: list[str]
    hosts: int
    hosted: str
    cpus: str
    env: dict[str, str]


def setups_for(names: list[str], tmp: Path, exe: str, nats_url: str, port_base: int) -> list[Setup]:
    out = []
    for k, name in enumerate(names):
        spec = SETUPS[name]
        conf = tmp / f"{name}.yaml"
        text = meshbus_conf(1)
        hosts, hosted, cpus = 0, "", "0"
        if spec is not None:
            text += PLUGIN.format(filter=spec[0], placement=spec[1])
            hosts, hosted = spec[2], spec[0]
            cpus = "0" if hosted.startswith("bench-noop") else "0,1"
        conf.write_text(text)
        port, admin = 18200 + port_base + k, 18300 + port_base + k
        cmd = [exe, "--config", str(conf), "--outbound", f"127.0.0.1:{port}", "--inbound", "off",
               "--admin", f"127.0.0.1:{admin}", "--workers", "1", "--log-level", "warning",
               "--access-log", str(tmp / f"access-{k}.log"), "--nats", nats_url]  # fmt: skip
        env = {ENV: WRITE_POLICY[name]} if name in WRITE_POLICY else {}
        out.append(Setup(name, port, cmd, hosts, hosted, cpus, env))
    return out


@contextlib.contextmanager
def started(
    setups: list[Setup], nats_url: str, env: dict[str, str], tmp: Path
) -> Iterator[dict[str, tuple[int, list[int]]]]:
    """Every setup's proxy (and filter hosts) running at once: name -> (proxy pid, host pids)."""
    with contextlib.ExitStack() as stack:
        pids = {}
        for s in setups:
            env_s = {**env, **s.env}
            host_pids = stack.enter_context(
                filter_hosts(
                    s.hosts,
                    nats_url,
                    env_s,
                    tmp / s.name,
                    s.hosted or "bench-noop",
                    s.cpus,
                    CONCURRENCY.get(s.hosted, 64),
                )
            )
            pid = stack.enter_context(process(s.cmd, 1, s.port, tmp / f"{s.name}.log", env_s))
            pids[s.name] = (pid, host_pids)
        for s in setups:
            run_wrk(s.port, 1, pids[s.name][0])  # warm-up: pools, caches, the remote filter's description
        yield pids


def measure_wrk(s: Setup, pid: int, host_pids: list[int], duration: int) -> tuple[float, float, float, int]:
    """(req/s, proxy CPU us/req, hosts' CPU us/req, errors) of one wrk run."""
    before = sum(cpu_seconds(p) for p in host_pids)
    rps, cpu_us, errors = run_wrk(s.port, duration, pid)
    host_us = (
        (sum(cpu_seconds(p) for p in host_pids) - before) * 1e6 / (rps * duration)
        if host_pids and rps
        else 0.0
    )
    return rps, cpu_us, host_us, errors


INPROC: Final = ("none", "inproc-noop", "inproc-header")


def sched_ns(pid: int) -> tuple[int, int]:
    """Time ``pid``'s threads spent on a CPU and waiting in a run queue for one, in ns
    (``/proc/PID/task/*/schedstat``: nanoseconds, where ``/proc/PID/stat``'s 10 ms ticks would be a
    1 % step on a one-second run)."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            fields = (task / "schedstat").read_text().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
    return run, wait


def cpu_ns(pid: int) -> int:
    """CPU time of ``pid``'s threads in ns (``sched_ns``)."""
    return sched_ns(pid)[0]


def run_floor(
    nats_url: str, duration: int, env: dict[str, str], realtime: bool = False
) -> tuple[float, float]:
    """p50, p99 (ms) of bare nats-py request/reply at 1,000 calls/s over ``nats_url``: bench/remote_filter.py
    ``--floor`` (its client on CPU 1 as the proxy, its responder on CPU 0 as the no-op's host);
    ``realtime``: both SCHED_FIFO, as the proxies and hosts in the latency runs (the responder is the
    client's child process, which inherits the policy)."""
    from remote_filter import ROUND

    cmd = [*(REALTIME if realtime else []), sys.executable, str(Path(__file__).parent / "remote_filter.py"), "--floor", "--rate", "1000",
           "--duration", str(duration), "--nats", nats_url]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    m = ROUND.search(out)
    if m is None:
        raise RuntimeError(f"remote_filter.py --floor printed no round:\n{out}")
    return float(m["p50"]), float(m["p99"])


def per_request(
    before: dict[str, list[tuple[int, int]]], after: dict[str, list[tuple[int, int]]], duration: int
) -> str:
    """Each process's CPU time and run-queue wait (schedstat) over a latency run, in us a request
    (1,000 req/s): what the machine's other load takes from each hop shows as the wait."""
    out = []
    for name, xs in after.items():
        if xs:
            run = sum(a[0] - b[0] for a, b in zip(xs, before[name], strict=True)) / (1000 * duration) / 1e3
            wait = sum(a[1] - b[1] for a, b in zip(xs, before[name], strict=True)) / (1000 * duration) / 1e3
            out.append(f"{name} {run:.0f}/{wait:.0f}")
    return ", ".join(out)


@dataclass
class HostShare:
    """A scaling run's hosts: calls a second, and each host's share of the run's wall time on a CPU
    and waiting in a run queue for one (schedstat)."""

    rps: float
    hosts: int
    run: list[float]
    wait: list[float]


def measure_hosts(
    s: Setup, pid: int, host_pids: list[int], duration: int
) -> tuple[float, float, float, int, HostShare]:
    before = [sched_ns(p) for p in host_pids]
    t0 = time.monotonic()
    rps, cpu_us, host_us, errors = measure_wrk(s, pid, host_pids, duration)
    wall = (time.monotonic() - t0) * 1e9
    after = [sched_ns(p) for p in host_pids]
    share = HostShare(
        rps,
        len(host_pids),
        [(a[0] - b[0]) / wall for a, b in zip(after, before, strict=True)],
        [(a[1] - b[1]) / wall for a, b in zip(after, before, strict=True)],
    )
    return rps, cpu_us, host_us, errors, share


@dataclass
class Interleaved:
    """One in-process setup's runs in the interleaved rounds: req/s, proxy CPU us per request."""

    rps: list[float]
    cpu_us: list[float]
    errors: int = 0


def interleaved(
    setups: list[Setup], pids: dict[str, tuple[int, list[int]]], rounds: int, duration: int
) -> dict[str, Interleaved]:
    """``rounds`` short wrk runs of each setup against the same warm proxies, the order rotated
    every round and reversed every other cycle (so each setup runs in each place, after and before
    each other, equally often)."""
    out = {s.name: Interleaved([], []) for s in setups}
    n = len(setups)
    for rnd in range(rounds):
        k = rnd % n
        order = setups[k:] + setups[:k]
        if (rnd // n) % 2:
            order.reverse()
        for s in order:
            pid = pids[s.name][0]
            c0 = cpu_ns(pid)
            rps, _tick_us, errors = run_wrk(s.port, duration, None)
            cpu_us = (cpu_ns(pid) - c0) / 1e3 / (rps * duration) if rps else float("nan")
            r = out[s.name]
            r.rps.append(rps)
            r.cpu_us.append(cpu_us)
            r.errors += errors
        print(f"  interleaved round {rnd + 1}: " + ", ".join(
            f"{s.name} {out[s.name].rps[-1]:,.0f} rps {out[s.name].cpu_us[-1]:.1f} us" for s in setups))  # fmt: skip
    return out


MICRO_REQUEST: Final = b"GET / HTTP/1.1\r\nHost: origin\r\nUser-Agent: h2load nghttp2/1.52.0\r\n\r\n"
"""The in-memory loops' request: with a User-Agent, as h2load's (bench/plugins_live_callgrind.py) and
most clients' requests carry one. The header filter copies it into another header: a new str parsed
from each request (the same text each time, as one client sends), as when serving traffic. Without
one the filter set the constant "-", one object the adapter had seen before, and the in-memory count
measured a cheaper path than the live one (this measures more truly: the figures went up, none by
the header's parsing; a text that differs from the last one set still costs ~1,100 instructions
more a request: see the adapter's ``_Line.take``)."""


def micro(names: list[str], n: int, runs: int) -> dict[str, list[float]]:
    """Python us per request in memory for each in-process setup, ``runs`` alternating runs each."""
    import uvloop
    from micro import outbound_loop

    async def go() -> dict[str, list[float]]:
        loops = {name: await outbound_loop(SETUPS[name][0].removeprefix("bench-") if SETUPS[name] else "",
                                           request=MICRO_REQUEST) for name in names}  # fmt: skip
        out: dict[str, list[float]] = {name: [] for name in names}
        for r in range(runs):
            for name in names if r % 2 == 0 else reversed(names):
                loop = loops[name][1]
                t0 = time.thread_time()
                loop(n)
                out[name].append((time.thread_time() - t0) / n * 1e6)
        for _server, _loop, close in loops.values():
            await close()
        return out

    return uvloop.run(go())


def count_only(name: str, n: int) -> None:
    """``n`` requests through the in-memory loop of setup ``name`` (run under callgrind)."""
    import uvloop
    from micro import outbound_loop

    async def go() -> None:
        spec = SETUPS[name]
        _server, loop, close = await outbound_loop(
            spec[0].removeprefix("bench-") if spec else "", request=MICRO_REQUEST
        )
        loop(n)
        await close()

    uvloop.run(go())


def callgrind(top: int) -> None:
    """Instructions per request (user space) of each in-process setup in memory, and the functions
    whose own instructions per request a filter adds most: callgrind, the difference of a run of
    1,200 requests and one of 200 (start-up and warm-up cancel out)."""
    from micro_chain import _self_costs, collected

    per_req: dict[str, float] = {}
    hook: dict[str, float] = {}
    miss: dict[str, float] = {}
    path: dict[str, float] = {}
    funcs: dict[str, dict[str, float]] = {}
    for name in INPROC:
        counts, costs, hooks, misses, paths = [], [], [], [], []
        for n in (200, 1200):
            env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict and set layouts in every run
            count, out = collected(__file__, ["--count-only", name, "--micro-requests", str(n)], env)
            counts.append(count)
            costs.append(_self_costs(out) if top else {})
            hooks.append(_hook_cost(out))
            misses.append(_type_cache_misses(out))
            paths.append(_request_path(out))
        per_req[name] = (counts[1] - counts[0]) / 1000
        path[name] = (paths[1] - paths[0]) / 1000
        hook[name] = (hooks[1] - hooks[0]) / 1000
        miss[name] = (misses[1] - misses[0]) / 1000
        small, big = costs
        funcs[name] = {f: (big.get(f, 0) - small.get(f, 0)) / 1000 for f in big}
    base = per_req["none"]
    print("in memory, callgrind (instructions per request, user space; 1,200 minus 200 requests):")
    for name in INPROC:
        print(f"  {name:14s} {per_req[name]:8.0f}" + ("" if name == "none" else f"  {per_req[name] - base:+6.0f} "
              f"({per_req[name] / base - 1:+.1%}); the chain's call of the filter (PluginFilter.on_request_headers, "
              f"inclusive) {hook[name]:.0f}"))  # fmt: skip
    print("  the request path alone (inclusive, from the loop's three calls; start-up and shutdown left out, whose "
          "misses vary with the heap by ~1k instructions a request): " + ", ".join(
          f"{name} {path[name]:.0f}" + ("" if name == "none" else f" ({path[name] / path['none'] - 1:+.1%})")
          for name in INPROC))  # fmt: skip
    print("  type attribute cache misses per request (_PyType_Lookup's calls of find_name_in_mro, ~500 instructions "
          "each): " + ", ".join(f"{name} {miss[name]:.2f}" for name in INPROC))  # fmt: skip
    print("  (CPython's type attribute cache is keyed by type version and the name's address: two lookups a request "
          "that share a slot miss at every request, a layout accident; the request path binds what it looked up "
          "by name, so only a filter's own attribute reads remain: see bench/plugins.py's doc)")  # fmt: skip
    for name in INPROC[1:] if top else ():
        diff = {f: c - funcs["none"].get(f, 0.0) for f, c in funcs[name].items()}
        print(f"{name}: the {top} functions it adds most to (own instructions per request, against none):")
        for f, c in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
            print(f"{c:9.0f}  {f}")


def _type_cache_misses(path: Path) -> int:
    """How many times ``_PyType_Lookup`` missed CPython's type attribute cache (its calls of
    ``find_name_in_mro``; type creation calls it from ``update_one_slot``, not counted)."""
    text = subprocess.check_output(
        ["callgrind_annotate", "--tree=caller", "--threshold=100", str(path)], text=True
    )
    m = re.search(
        r"< \S*:_PyType_Lookup \(([\d,]+)x\)[^\n]*\n(?:[^\n]*< [^\n]*\n)*\s*[\d,]+ \([^)]*\)\s+\*\s+\S*:find_name_in_mro ",
        text,
    )
    return int(m.group(1).replace(",", "")) if m else 0


_ENTRIES: Final = (
    "CPyPy_listener___DownstreamConnection___data_received",
    "CPyPy_upstream___UpstreamConnection___data_received",
    "CPyPy_write_batch___WriteBatch___flush",
)
"""What bench/micro.py's loop calls for each request (compiled): their inclusive cost is the request's."""


def _request_path(path: Path) -> int:
    """Inclusive instructions of the loop's calls (``_ENTRIES``; 0 when not compiled)."""
    text = subprocess.check_output(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)], text=True
    )
    # A function is listed once per file its code comes from (its own, and headers inlined into it):
    # the largest of its lines is its inclusive cost.
    cost: dict[str, int] = {}
    for m in re.finditer(r"^\s*([\d,]+) \([^)]*\)\s+\S*:(\w+)", text, re.M):
        if m.group(2) in _ENTRIES:
            cost[m.group(2)] = max(cost.get(m.group(2), 0), int(m.group(1).replace(",", "")))
    return sum(cost.values())


def _hook_cost(path: Path) -> int:
    """Inclusive instructions of the compiled PluginFilter.on_request_headers (0 when not compiled)."""
    text = subprocess.check_output(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)], text=True
    )
    m = re.search(
        r"^\s*([\d,]+) \([^)]*\)\s+\S*:CPyDef_adapter___PluginFilter___on_request_headers\b", text, re.M
    )
    return int(m.group(1).replace(",", "")) if m else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=10, help="paired throughput rounds (0: none)")
    ap.add_argument(
        "--inproc-rounds", type=int, default=30, help="interleaved rounds of the in-process setups (0: none)"
    )
    ap.add_argument("--inproc-duration", type=int, default=1, help="seconds per wrk run in those rounds")
    run.add_latency_args(
        ap, "the origin, every proxy, filter host and nats-server, the h2loads and the floor's two sides"
    )
    ap.add_argument("--latency-rounds", type=int, default=3)
    ap.add_argument("--scaling-rounds", type=int, default=1, help="burn filter, one host vs two (0: skip)")
    ap.add_argument("--micro-requests", type=int, default=20000, help="requests per in-memory run (0: skip)")
    ap.add_argument("--micro-runs", type=int, default=9)
    ap.add_argument(
        "--reference-write",
        nargs="?",
        const="once",
        choices=["once", "first"],
        help="add remote-noop-once (bus/direct.py's earlier write policy) or remote-noop-first (the "
        "current one without its busy rule), for reference",
    )
    ap.add_argument(
        "--stages",
        action="store_true",
        help="stamp each stage of the remote no-op's calls in its proxy and host (bench/stages.py)",
    )
    ap.add_argument(
        "--nats-cpus",
        default="",
        help="pin nats-server's threads to these CPUs (taskset list, e.g. 0; default: not pinned)",
    )
    ap.add_argument("--only", default="", help="comma list of setups: " + ",".join(SETUPS))
    ap.add_argument("--port-base", type=int, default=0, help="move every port by this (another bench runs)")
    ap.add_argument(
        "--callgrind",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="TOP",
        help="only instructions per request in memory (callgrind), with the TOP functions each filter adds",
    )
    ap.add_argument("--count-only", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.count_only:
        count_only(args.count_only, args.micro_requests)
        return 0
    if args.callgrind is not None:
        callgrind(args.callgrind)
        return 0
    if args.port_base:
        run.ORIGIN, run.MESHBUS, run.MESHBUS_ADMIN = (
            p + args.port_base for p in (run.ORIGIN, run.MESHBUS, run.MESHBUS_ADMIN)
        )
    chosen = [k for k in SETUPS if k not in WRITE_POLICY and (not args.only or k in args.only.split(","))]
    paired = [k for k in PAIRED if k in chosen]
    if args.reference_write:
        chosen.append(f"remote-noop-{args.reference_write}")
        paired.append(f"remote-noop-{args.reference_write}")
    scaling = [k for k in SCALING if k in chosen] if args.scaling_rounds else []
    tmp = scratch_dir("meshbus-bench-plugins-")
    install_filters(tmp / "site")
    sys.path.insert(0, str(tmp / "site"))
    inproc = [k for k in paired if SETUPS[k] is None or SETUPS[k][1] == "IN_PROCESS"]  # type: ignore[index]
    mem = micro(inproc, args.micro_requests, args.micro_runs) if args.micro_requests and inproc else {}
    inproc_rounds = args.inproc_rounds if [k for k in INPROC if k in paired][1:] else 0
    if not (args.rounds or args.latency_rounds or scaling or inproc_rounds):
        report({}, {}, mem, {}, Result(), {})
        return 0
    if check_tools():
        return 2
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(tmp / "site"), os.environ.get("PYTHONPATH")) if p),
        "MALLOC_TRIM_THRESHOLD_": str(32 << 20),
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
    nats = EmbeddedNats(port=0, store_dir=str(tmp / "nats"))
    nats.start()
    if args.nats_cpus:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", args.nats_cpus, str(nats.pid)], check=True, capture_output=True
        )
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    results = {name: Result() for name in chosen}
    floor = Result()
    shares: dict[str, list[HostShare]] = {name: [] for name in scaling}
    inter: dict[str, Interleaved] = {}
    host_cpu: dict[str, list[float]] = {name: [] for name in chosen}
    realtime = realtime_ok() if args.realtime is None else args.realtime
    print(f"bench dir {tmp}; {args.rounds} paired rounds x wrk {args.duration}s, {args.latency_rounds} latency "
          f"rounds x {args.latency_duration}s{' SCHED_FIFO' if realtime else ''}, {args.scaling_rounds} scaling rounds")  # fmt: skip
    try:
        with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log") as origin:
            setups = setups_for(paired, tmp, exe, nats.url, args.port_base)
            for rnd in range(args.rounds):
                with started(setups, nats.url, env, tmp) as pids:
                    # A B C D, then D C B A: a drift in the machine's load weighs on both sides of each pair.
                    for s in setups if rnd % 2 == 0 else reversed(setups):
                        pid, host_pids = pids[s.name]
                        rps, cpu_us, host_us, errors = measure_wrk(s, pid, host_pids, args.duration)
                        res = results[s.name]
                        res.rps.append(rps)
                        res.cpu_us.append(cpu_us)
                        res.errors += errors
                        host_cpu[s.name].append(host_us)
                        print(f"  round {rnd + 1} {s.name:18s} {rps:9,.0f} rps  proxy {cpu_us:6.1f} us/req  "
                              f"hosts {host_us:6.1f} us/req  errors {errors}")  # fmt: skip
            if inproc_rounds:
                ip = [s for s in setups if s.name in INPROC]
                with started(ip, nats.url, env, tmp) as pids:
                    inter = interleaved(ip, pids, inproc_rounds, args.inproc_duration)
            for rnd in range(args.latency_rounds):
                for s in setups:
                    if args.stages and s.name.startswith("remote-noop"):
                        s.env[stages.ENV] = str(tmp / f"stages-{s.name}-{rnd}")
                        (tmp / f"stages-{s.name}-{rnd}").mkdir()
                with (
                    started(setups, nats.url, env, tmp) as pids,
                    # the whole round's processes, whichever setup runs: every setup meets the same
                    # policies (the warm-up before is not FIFO: a FIFO process at full load starves the rest)
                    fifo_while(
                        [
                            origin,
                            *([nats.pid] if nats.pid else []),
                            *(p for pid, hosts in pids.values() for p in (pid, *hosts)),
                        ]
                        if realtime
                        else []
                    ),
                ):
                    order: list[Setup | None] = [*setups, None]  # None: the floor, next to the remote no-op
                    for s in order if rnd % 2 == 0 else reversed(order):
                        if s is None:
                            served = {"nats-server": [sched_ns(nats.pid or 0)]}
                            f50, f99 = run_floor(nats.url, args.latency_duration, env, realtime)
                            floor.p50.append(f50)
                            floor.p99.append(f99)
                            print(f"  latency round {rnd + 1} {FLOOR:18s} p50/p99 {f50:.3f}/{f99:.3f} ms; us a call "
                                  "on a CPU / waiting for one: " + per_request(served, {"nats-server": [sched_ns(nats.pid or 0)]}, args.latency_duration))  # fmt: skip
                            continue
                        procs = {
                            "proxy": [pids[s.name][0]],
                            "hosts": pids[s.name][1],
                            "nats-server": [nats.pid or 0],
                        }
                        before = {k: [sched_ns(p) for p in v] for k, v in procs.items()}
                        us0 = cpu_user_sys(pids[s.name][0])
                        p50, _p90, p99 = percentiles(
                            latency_samples(
                                s.port,
                                args.latency_duration,
                                tmp,
                                warmup=args.latency_warmup,
                                segments=args.latency_segments,
                                realtime=realtime,
                            )
                        )
                        sched = {k: [sched_ns(p) for p in v] for k, v in procs.items()}
                        user, kernel = (
                            (b - a) * 1e3 / args.latency_duration
                            for a, b in zip(us0, cpu_user_sys(pids[s.name][0]), strict=True)
                        )
                        results[s.name].p50.append(p50)
                        results[s.name].p99.append(p99)
                        print(f"  latency round {rnd + 1} {s.name:18s} p50/p99 {p50:.3f}/{p99:.3f} ms; "
                              "us a request on a CPU / waiting for one: " + per_request(before, sched, args.latency_duration)
                              + f"; proxy user {user:.0f} / kernel {kernel:.0f} us a request")  # fmt: skip
                        if stages.ENV in s.env:
                            time.sleep(1.5)  # the processes write their stamps every second
                            stages.report(
                                Path(s.env.pop(stages.ENV)),
                                [
                                    tmp / f"h2load-{g}-{i}.log"
                                    for g in range(args.latency_segments)
                                    for i in range(10)
                                ],
                            )
            scaled = setups_for(scaling, tmp, exe, nats.url, args.port_base + 50)
            for rnd in range(args.scaling_rounds if scaling else 0):
                for s in scaled:  # one at a time: two busy hosts take both cores
                    with started([s], nats.url, env, tmp) as pids:
                        pid, host_pids = pids[s.name]
                        rps, cpu_us, host_us, errors, share = measure_hosts(s, pid, host_pids, args.duration)
                    shares[s.name].append(share)
                    results[s.name].rps.append(rps)
                    results[s.name].cpu_us.append(cpu_us)
                    results[s.name].errors += errors
                    host_cpu[s.name].append(host_us)
                    print(f"  scaling round {rnd + 1} {s.name:18s} {rps:9,.0f} rps  hosts {host_us:6.1f} us/req  "
                          f"each host on a CPU / waiting for one: "
                          + ", ".join(f"{r:.0%}/{w:.0%}" for r, w in zip(share.run, share.wait, strict=True)))  # fmt: skip
    finally:
        nats.cleanup()
    report(results, host_cpu, mem, inter, floor, shares)
    return 1 if any(r.errors for r in [*results.values(), *inter.values()]) else 0


def _m(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _spread(xs: list[float], fmt: str = "{:+.1%}") -> str:
    if not xs:
        return "-"
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))} .. {fmt.format(max(xs))}]"


def _diff(xs: list[float], base: list[float]) -> list[float]:
    """Per run or round: ``x - base`` (the two next to each other)."""
    return [x - b for x, b in zip(xs, base, strict=True)]


def _paired(results: dict[str, Result], base: Result, attr: str) -> Iterator[tuple[str, Result]]:
    """The paired setups measured in as many rounds of ``attr`` as ``base``."""
    for name, r in results.items():
        if name != "none" and name not in SCALING and len(getattr(r, attr)) == len(getattr(base, attr)):
            yield name, r


def report_interleaved(inter: dict[str, Interleaved]) -> None:
    base = inter["none"]
    n = len(base.rps)
    print(
        f"\nin-process setups, {n} interleaved rounds (the same warm proxies; per round against that round's 'none'):"
    )
    print("| setup | req/s median [min-max] | throughput cost, per round | proxy CPU us/req median [min-max] "
          "| CPU per request cost, per round | errors |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, r in inter.items():
        if name == "none":
            tput = cpu = "-"
        else:
            tput = _spread([1 - x / b for x, b in zip(r.rps, base.rps, strict=True)])
            cpu = _spread([x / b - 1 for x, b in zip(r.cpu_us, base.cpu_us, strict=True)])
        print(f"| {name} | {med(r.rps)} | {tput} | {med(r.cpu_us)} | {cpu} | {r.errors} |")


def report(
    results: dict[str, Result],
    host_cpu: dict[str, list[float]],
    mem: dict[str, list[float]],
    inter: dict[str, Interleaved],
    floor: Result,
    shares: dict[str, list[HostShare]],
) -> None:
    base_mem = mem.get("none")
    if base_mem:
        print(
            "\nin memory (Python CPU time per request through the chain; per run against the adjacent 'none' run):"
        )
        print(f"  none: {_spread(base_mem, '{:.2f}')} us per request (best {min(base_mem):.2f})")
        for name, xs in mem.items():
            if name == "none":
                continue
            us = _diff(xs, base_mem)
            rel = [x / b - 1 for x, b in zip(xs, base_mem, strict=True)]
            print(f"  {name}: {_spread(us, '{:+.2f}')} us, {_spread(rel)} "
                  f"(best runs {min(base_mem):.2f} -> {min(xs):.2f} us, {min(xs) / min(base_mem) - 1:+.1%})")  # fmt: skip
    if inter:
        report_interleaved(inter)
    if not results:
        return
    print()
    print(
        "| setup | req/s median [min-max] | proxy CPU us/req median [min-max] | hosts us/req | p50 ms | p99 ms | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {med(r.rps)} | {med(r.cpu_us)} | {_m(host_cpu.get(name, [])):.1f} | {med(r.p50)} | "
              f"{med(r.p99)} | {r.errors} |")  # fmt: skip
    base = results.get("none")
    if base is not None and base.rps:
        print("\ncost against 'none', per round from the adjacent runs, median [min .. max]:")
        for name, r in _paired(results, base, "rps"):
            cpu = [x / b - 1 for x, b in zip(r.cpu_us, base.cpu_us, strict=True)]
            us = _diff(r.cpu_us, base.cpu_us)
            rps = [1 - x / b for x, b in zip(r.rps, base.rps, strict=True)]
            print(f"  {name:18s} throughput {_spread(rps)} lower; proxy CPU per request {_spread(cpu)} "
                  f"({_spread(us, '{:+.1f}')} us); least disturbed {min(base.cpu_us):.1f} -> {min(r.cpu_us):.1f} us "
                  f"({min(r.cpu_us) / min(base.cpu_us) - 1:+.1%})")  # fmt: skip
    if base is not None and base.p50:
        report_latency(results, base, floor)
    report_scaling(results, host_cpu, shares)
    print(
        "targets (issue 12): in-process no-op < 3 %, header < 8 % of throughput; remote no-op < +0.5 ms p50, "
        "< +1 ms p99 at 1,000 req/s where a NATS request/reply costs 0.2 ms p50, i.e. added p50 < 2.5x and "
        "added p99 < 5x the floor's p50; two hosts close to 2x one"
    )


def report_latency(results: dict[str, Result], base: Result, floor: Result) -> None:
    """Each setup's added p50/p99 against the round's 'none', in ms and as a multiple of the same
    round's floor p50 (the issue's targets are stated against a 0.2 ms request/reply)."""
    print("latency at 1,000 req/s against 'none', per round, median [min .. max]:")
    if floor.p50:
        print(f"  {FLOOR:18s} p50 {_spread(floor.p50, '{:.3f}')} ms, p99 {_spread(floor.p99, '{:.3f}')} ms "
              "(bare nats-py request/reply, same nats-server, paced at 1,000/s, run in each latency round)")  # fmt: skip
    for name, r in _paired(results, base, "p50"):
        d50, d99 = _diff(r.p50, base.p50), _diff(r.p99, base.p99)
        line = f"  {name:18s} p50 {_spread(d50, '{:+.3f}')} ms, p99 {_spread(d99, '{:+.3f}')} ms"
        if len(floor.p50) == len(d50):
            x50 = [d / f for d, f in zip(d50, floor.p50, strict=True)]
            x99 = [d / f for d, f in zip(d99, floor.p50, strict=True)]
            line += f"; x floor p50: p50 {_spread(x50, '{:+.2f}x')}, p99 {_spread(x99, '{:+.2f}x')}"
        print(line)


def report_scaling(
    results: dict[str, Result], host_cpu: dict[str, list[float]], shares: dict[str, list[HostShare]]
) -> None:
    """Two hosts against one for each scaling filter, with what bounds each run: a host that is on a
    CPU or waiting for one nearly all the time is CPU-bound (burn: 2 cores shared with the proxy,
    nginx, wrk and nats-server cannot give two hosts two cores); one that is mostly asleep in its
    filter is bound by the wait (a host serves at most ~1/BURN_MS calls a second whatever the cores)."""
    for kind, what in (("burn", f"{BURN_MS:g} ms of CPU a call"), ("wait", f"{BURN_MS:g} ms asleep a call")):
        one, two = results.get(f"remote-{kind}-1host"), results.get(f"remote-{kind}-2hosts")
        if not (one and two and one.rps and two.rps):
            continue
        print(f"scaling, {kind} ({what}): two hosts / one host throughput {_m(two.rps) / _m(one.rps):.2f}x")
        for name in (f"remote-{kind}-1host", f"remote-{kind}-2hosts"):
            for sh in shares.get(name, []):
                per_host = sh.rps / sh.hosts
                asleep = per_host * BURN_MS / 1000 if kind == "wait" else 0.0
                busy = [r + w for r, w in zip(sh.run, sh.wait, strict=True)]
                bound = (
                    "its CPU (on a CPU or waiting for one nearly all the time)"
                    if min(busy) > 0.85
                    else "the filter's wait (asleep in it most of the time, little CPU)"
                    if asleep > 0.6 and max(busy) < 0.5
                    else "neither alone (the hosts neither busy nor asleep most of the time)"
                )
                print(f"  {name:18s} {sh.rps:7,.0f} rps ({per_host:,.0f} a host), hosts {_m(host_cpu.get(name, [])):.0f} us "
                      f"CPU/req; each host on a CPU / waiting for one: "
                      + ", ".join(f"{r:.0%}/{w:.0%}" for r, w in zip(sh.run, sh.wait, strict=True))
                      + (f", asleep in the filter ~{asleep:.0%}" if kind == "wait" else "")
                      + f"; bound by {bound}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
