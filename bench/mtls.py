"""Two-proxy chain benchmark: plaintext vs mesh mTLS, side by side with HAProxy chained with mutual TLS.

    .venv/bin/python bench/mtls.py [--duration 5] [--latency-duration 5] [--rounds 3]

Chain: wrk -> proxy A (client sidecar, outbound) -> proxy B (server sidecar, inbound) -> nginx origin.
Set-up (bench/chain.py) as bench/run.py and shared/reference/bench-anchors.md: load generator and origin on CPU 0,
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
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py and chain.py next to this file
from chain import handshakes, meshbus_chain, prepare
from run import ORIGIN, Result, check_tools, cpu_seconds, med, process, run_latency, run_wrk

HA_A, HA_B = 18111, 18112


# ---- configs ---------------------------------------------------------------------------------------------


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


# ---- parent ----------------------------------------------------------------------------------------------


def haproxy_chain(tmp: Path, tls: bool) -> list[tuple[list[str], int]]:
    tag = "tls" if tls else "plain"
    out = []
    for role, port in (("b", HA_B), ("a", HA_A)):
        f = tmp / f"haproxy-{role}-{tag}.cfg"
        f.write_text(haproxy_chain_conf(tmp, role, tls))
        out.append((["haproxy", "-f", str(f)], port))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    prepare(tmp)
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
