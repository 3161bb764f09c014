"""Instructions per request of meshbus-proxy serving real sockets with no filter, the in-process no-op
filter and the in-process header filter: bench/plugins.py's proxies (its config, its Plugin resource,
its filters as entry points), one at a time under callgrind.

    .venv/bin/python bench/plugins_live_callgrind.py [--only none,inproc-noop,inproc-header] [--port-base N]

``bench/plugins.py --callgrind`` counts the request path in memory (bench/micro.py's loop: no
sockets, no event loop, no access-log writer), so its "none" leaves out user-space work every
request costs a proxy that serves traffic, and a filter's share of it reads larger than its share of
the proxy's throughput. This counts the whole process as bench/chain_callgrind.py does: the proxy
runs under valgrind's callgrind, nginx (the origin) natively, h2load sends 10 requests that open its
10 keep-alive connections and then N; the proxy is stopped (SIGTERM: callgrind writes its totals)
and the same is repeated with N + 2000: the difference / 2000 is its user-space instructions per
request (uvloop, the request path, the filter's call, the access-log writer, the periodic tasks'
share). The kernel's work per request (socket reads and writes, epoll), which a filter does not add
to, is still left out, so a filter's share of this count is still an upper bound of its share of
the proxy's CPU. Both runs pass a hook's first 64 calls (all timed by the adapter); the 2,000
between them are the steady state. Needs valgrind, nginx and h2load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the set-ups come from plugins.py, the helpers from chain_callgrind.py and run.py
import run
from chain_callgrind import load_and_collect, wait_port
from scratch import scratch_dir

import plugins
from meshbus.bus.embedded import EmbeddedNats

SETUPS = ("none", "inproc-noop", "inproc-header")
N = 1000


def count(setup: plugins.Setup, n: int, out: Path, env: dict[str, str]) -> int:
    """The proxy's user-space instructions over a warm-up of 10 requests and ``n`` more."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *setup.cmd]
    counted = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_port(setup.port, 900.0)  # start-up under valgrind on a shared 2-core machine: minutes
        return load_and_collect(counted, setup.port, n, setup.name)
    finally:
        if counted.poll() is None:  # a run that failed before its SIGTERM
            counted.kill()
            counted.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SETUPS), help="comma list of: " + ",".join(SETUPS))
    ap.add_argument(
        "--port-base", type=int, default=28400, help="the origin on N, the proxy on N+1 (admin N+2)"
    )
    args = ap.parse_args()
    names = [s for s in SETUPS if s in args.only.split(",")]
    run.ORIGIN = args.port_base
    tmp = scratch_dir("meshbus-plugins-live-cg-")
    plugins.install_filters(tmp / "site")
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(run.nginx_conf(tmp))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(tmp / "site"), os.environ.get("PYTHONPATH")) if p),
        "PYTHONHASHSEED": "0",  # the same dict and set layouts in every run
        "MALLOC_TRIM_THRESHOLD_": str(32 << 20),
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    nats = EmbeddedNats(port=0, store_dir=str(tmp / "nats"))
    nats.start()
    nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf")], stderr=subprocess.DEVNULL)
    per_req: dict[str, float] = {}
    try:
        wait_port(run.ORIGIN)
        for name in names:
            # each set-up alone, on the same ports: plugins.setups_for numbers them by position
            (setup,) = plugins.setups_for([name], tmp, exe, nats.url, args.port_base + 1 - 18200)
            setup.cmd[setup.cmd.index("--admin") + 1] = f"127.0.0.1:{args.port_base + 2}"
            small, big = (count(setup, n, tmp / f"{name}-{n}.out", env) for n in (N, N + 2000))
            per_req[name] = (big - small) / 2000
            print(f"  {name:14s} {per_req[name]:8.0f}", flush=True)
    finally:
        nginx.terminate()
        nginx.wait()
        nats.stop()
    base = per_req.get("none")
    print("meshbus-proxy serving sockets, callgrind (instructions per request, user space; event loop, "
          f"access log and periodic tasks included; {N + 2000} minus {N} requests):")  # fmt: skip
    for name, v in per_req.items():
        extra = "" if base is None or name == "none" else f"  {v - base:+6.0f} ({v / base - 1:+.1%})"
        print(f"  {name:14s} {v:8.0f}{extra}")


if __name__ == "__main__":
    main()
