"""Build time of one proxy runtime, from each source the config can come from (no sockets, no bus).

    .venv/bin/python bench/build.py [--services 100,1000] [--repeat 5] [--baseline DIR]

Per mesh size (N services, each a ServiceEntry, a DestinationRule with two subsets and a
VirtualService splitting by weight), CPU milliseconds, the least of ``--repeat`` runs (and of
``--rounds`` interleaved runs); every build is given its version, as the proxy's callers do:
- ``file``: a full build from the resources the YAML loader made (standalone, ``--in-process-config``);
- ``worker``: a standalone worker's share when a child loads the YAML (the default): unpickling
  `bootstrap.dump_config`'s payload, then the full build;
- ``snapshot``: a full build from snapshot dicts through the agent's `ResourceCache` (validation);
- ``push``: one VirtualService changed (mesh mode's common push): validating that one resource and
  the incremental build (``previous=``) on top of the last runtime.
``--baseline DIR`` also runs the measurements against another tree (``DIR/meshbus/{proxy,bus,...}``,
as bench/run.py's ``--baseline``) in a child interpreter, interleaved, and prints both.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def resources(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        svc = f"s{i:04d}"
        meta = {"name": svc, "namespace": "default"}
        out.append({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": meta,
            "spec": {
                "hosts": [svc], "location": "MESH_INTERNAL", "resolution": "STATIC",
                "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                "endpoints": [
                    {"address": f"10.{i // 250}.{i % 250}.1", "labels": {"version": "v1"}},
                    {"address": f"10.{i // 250}.{i % 250}.2", "labels": {"version": "v2"}},
                ],
            },
        })  # fmt: skip
        out.append({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta,
            "spec": {
                "host": svc,
                "trafficPolicy": {"connectionPool": {"http": {"http1MaxPendingRequests": 100}},
                                  "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}},
                "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                            {"name": "v2", "labels": {"version": "v2"}}],
            },
        })  # fmt: skip
        out.append(virtual_service(svc, 90))
    return out


def virtual_service(svc: str, weight_v1: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": svc, "namespace": "default"},
        "spec": {"hosts": [svc], "http": [
            {"match": [{"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "1"}}}],
             "route": [{"destination": {"host": svc, "subset": "v2"}}]},
            {"route": [{"destination": {"host": svc, "subset": "v1"}, "weight": weight_v1},
                       {"destination": {"host": svc, "subset": "v2"}, "weight": 100 - weight_v1}],
             "timeout": "2s", "retries": {"attempts": 2, "retryOn": "5xx,connect-failure"}},
        ]},
    }  # fmt: skip


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Least CPU time of this process over ``repeat`` runs (not wall time, and not the median: on a shared
    machine interference only ever adds, so the least is the closest to the cost itself)."""
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1000)
    return min(times)


def measure(n: int, repeat: int) -> dict[str, float]:
    from meshbus.bus.config import load_text
    from meshbus.proxy.bootstrap import dump_config
    from meshbus.proxy.build.runtime import build_runtime
    from meshbus.proxy.mesh.snapshot_apply import ResourceCache, resource_key

    values = resources(n)
    text = "\n---\n".join(json.dumps(v) for v in values)
    loaded = load_text(text, "bench.yaml").raise_for_errors()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.yaml"
        path.write_text(text)
        code, payload, err = dump_config(str(path))
    assert code == 0, err
    out = {"file": timed(lambda: build_runtime(loaded, app_port=9080, version="1"), repeat)}
    out["worker"] = timed(lambda: build_runtime(pickle.loads(payload)[0], app_port=9080, version="1"), repeat)

    def from_snapshot() -> Any:
        cache = ResourceCache()
        typed = [cache.get(resource_key(v), v, "snapshot v1") for v in values]
        return build_runtime(typed, app_port=9080, version="1")

    out["snapshot"] = timed(from_snapshot, repeat)
    cache = ResourceCache()
    keys = [resource_key(v) for v in values]
    typed = [cache.get(k, v, "snapshot v1") for k, v in zip(keys, values, strict=True)]
    runtime = build_runtime(typed, app_port=9080, version="1")
    flips = iter(range(10**9))

    def push() -> None:
        nonlocal runtime
        i = 3 * (n // 2) + 2  # the middle service's VirtualService
        flip = next(flips)
        value = copy.deepcopy(values[i])
        route = value["spec"]["http"][1]["route"]
        route[0]["weight"], route[1]["weight"] = 50 + flip % 40, 50 - flip % 40
        typed[i] = cache.get(keys[i], value, f"snapshot v{flip + 2}")
        runtime = build_runtime(typed, app_port=9080, previous=runtime, version=str(flip + 2))

    out["push"] = timed(push, max(repeat, 20))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", default="100,1000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per tree")
    ap.add_argument("--baseline", default="", help="another meshbus tree (DIR/meshbus/...) to compare")
    ap.add_argument("--json", action="store_true", help="print one JSON object (used for --baseline)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.services.split(",")]
    if args.json:
        print(json.dumps({n: measure(n, args.repeat) for n in sizes}))
        return 0
    trees = (
        {"this tree": {}}
        if not args.baseline
        else {"baseline": {"PYTHONPATH": args.baseline}, "this tree": {}}
    )
    results: dict[str, dict[str, list[dict[str, float]]]] = {t: {} for t in trees}
    for _round in range(args.rounds):
        for tree, env in trees.items():
            cmd = [
                sys.executable,
                __file__,
                "--json",
                "--services",
                args.services,
                "--repeat",
                str(args.repeat),
            ]
            done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            for n, row in json.loads(done.stdout).items():
                results[tree].setdefault(n, []).append(row)
    print("| tree | services | file ms | worker ms | snapshot ms | push ms |")
    print("|---|---|---|---|---|---|")
    for tree, by_size in results.items():
        for n, rows in by_size.items():
            cells = [min(r[k] for r in rows) for k in ("file", "worker", "snapshot", "push")]
            print(f"| {tree} | {n} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
