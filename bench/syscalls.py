"""Syscalls per request of meshbus-proxy and HAProxy at 1,000 req/s, the bench/run.py set-up under strace.

    .venv/bin/python bench/syscalls.py [--requests 5000] [--only meshbus,haproxy] [--baseline DIR]

Each proxy is started as bench/run.py starts it (pinned to CPU 1, nginx and the load on CPU 0, meshbus with
its realistic config and access log), warmed up, then ``strace -c -f -p PID`` is attached while 10 h2load
connections send ``--requests`` requests at 1,000 req/s; the table is strace's counts divided by the
requests. strace slows the proxy, so read counts from it, not times.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the set-up comes from run.py next to this file
import run
from scratch import scratch_dir


def counts(strace_out: str) -> dict[str, int]:
    """strace -c's table: syscall name -> calls."""
    out: dict[str, int] = {}
    for line in strace_out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and not line.startswith("100.00"):
            out[parts[-1]] = int(parts[3])
    return out


def traced(pid: int, port: int, requests: int, tmp: Path) -> dict[str, int]:
    report = tmp / "strace.txt"
    st = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(report), "-p", str(pid)], stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # attached to every thread before the first request
    logs = [tmp / f"h2load-{i}.log" for i in range(10)]
    procs = run.start_h2load(port, 100, requests // 10, logs)
    for p in procs:
        p.wait(requests / 100 + 30)
    st.send_signal(signal.SIGINT)
    st.wait(30)
    return counts(report.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--only", default="haproxy,meshbus")
    ap.add_argument(
        "--baseline", default="", help="another meshbus tree (as run.py --baseline): 'meshbus-base'"
    )
    args = ap.parse_args(argv)
    tmp = scratch_dir("meshbus-syscalls-")
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(run.nginx_conf(tmp))
    (tmp / "haproxy.cfg").write_text(run.haproxy_conf())
    (tmp / "mesh.yaml").write_text(run.meshbus_conf(1))
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    mesh = [exe, "--config", str(tmp / "mesh.yaml"), "--outbound", f"127.0.0.1:{run.MESHBUS}", "--inbound", "off",
            "--admin", f"127.0.0.1:{run.MESHBUS_ADMIN}", "--workers", "1", "--log-level", "warning",
            "--access-log", str(tmp / "access.log")]  # fmt: skip
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(32 << 20), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    setups = {
        "haproxy": (["haproxy", "-f", str(tmp / "haproxy.cfg")], run.HAPROXY, env),
        "meshbus": (mesh, run.MESHBUS, env),
    }
    if args.baseline:
        setups["meshbus-base"] = (mesh, run.MESHBUS, {**env, "PYTHONPATH": args.baseline})
    table: dict[str, dict[str, int]] = {}
    names = [n for n in setups if n in args.only.split(",") or (n == "meshbus-base" and args.baseline)]
    with run.process(["nginx", "-c", str(tmp / "nginx.conf")], 0, run.ORIGIN, tmp / "nginx.log"):
        for name in names:
            cmd, port, penv = setups[name]
            with run.process(cmd, 1, port, tmp / f"{name}.log", penv) as pid:
                with contextlib.suppress(subprocess.CalledProcessError):
                    run.run_wrk(port, 1, pid)  # warm-up: pools, caches
                table[name] = traced(pid, port, args.requests, tmp)
    calls = sorted(
        {c for t in table.values() for c in t}, key=lambda c: -max(t.get(c, 0) for t in table.values())
    )
    print(f"syscalls per request ({args.requests} requests at 1,000 req/s, strace -c -f)")
    print("| syscall | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for c in calls:
        print(f"| {c} | " + " | ".join(f"{table[n].get(c, 0) / args.requests:.3f}" for n in names) + " |")
    print("| total | " + " | ".join(f"{sum(table[n].values()) / args.requests:.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
