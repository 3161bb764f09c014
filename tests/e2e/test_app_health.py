"""Issue 15, finding 8: a sidecar probes its app; when the app hangs, its sidecar turns unready
(``APP_UNHEALTHY``), discovery drops the workload from every endpoint set and traffic moves to the
other replica; when it heals, traffic comes back. Under steady traffic, no request fails.

Real processes: the demo control plane, two replicas of "ratings" (tests/support/hang_app.py, hung
and healed by signals) behind sidecars with ``--app-health``, and the demo's productpage sidecar as
the client. While the hung replica is still in the endpoint set (detection takes a few probe
periods), requests sent to it time out per try and are retried on the other replica, as an Istio
user configures a VirtualService; what the health check adds is that after it, no request reaches
the hung app at all.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from meshbus.control.cli.up import mint_tokens
from tests.support.mesh import DemoMesh, Traffic
from tests.support.processes import PYTHON, Proc, free_port_block, http_get, is_ready, wait_for

pytestmark = pytest.mark.timeout(90)

RATINGS_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
    - route:
        - destination: {host: ratings}
      retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset,connect-failure"}
---
# Round robin: a retry goes to the other replica. (meshbus retries do not yet avoid the hosts already
# tried, Istio's default previous_hosts predicate: with LEAST_REQUEST a retry may pick the hung one again.)
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"""
# Faster than the defaults (1 s period, 3 failures), with the default 1 s timeout: a loaded machine
# must not make the healthy replica look hung.
PROBE = (
    "--app-health",
    "http:/healthz",
    "--app-health-period",
    "0.25",
    "--app-health-failure-threshold",
    "2",
)


def _replica(mesh: DemoMesh, tmp: Path, name: str, token: str) -> tuple[Proc, int]:
    app = free_port_block(2)  # below the ephemeral range, where client sockets cannot take it
    admin = app + 1
    mesh.group.spawn(
        f"{name}-app", [PYTHON, "-m", "tests.support.hang_app", "--name", name, "--port", str(app)]
    )
    mesh.group.spawn(
        f"{name}-sidecar",
        [PYTHON, "-m", "meshbus.proxy", "--service", "ratings", "--service-account", "ratings",
         "--node-id", name, "--labels", "app=ratings", "--app-port", str(app), "--service-port", "http=9080",
         "--outbound", "off", "--inbound", "127.0.0.1:0", "--admin", f"127.0.0.1:{admin}",
         "--state-dir", str(tmp / name), *PROBE],
        env={"MESHBUS_TOKEN": token},
    )  # fmt: skip
    return mesh.group.get(f"{name}-app"), admin


def _ratings(mesh: DemoMesh) -> str:
    r = http_get(mesh.ports.client_outbound, "/", host="ratings")
    if r.status != 200:
        raise AssertionError(
            f"ratings answered {r.status} {r.headers.get('x-meshbus-flags')}: {r.body[:200]!r}"
        )
    return str(json.loads(r.body)["name"])


def _client_endpoints(mesh: DemoMesh) -> int:
    doc: dict[str, Any] = json.loads(http_get(mesh.ports.client_admin, "/clusters?format=json").body)
    return sum(len(c["endpoints"]) for c in doc["clusters"] if "ratings" in c["name"])


def _served(app: Proc) -> int:
    return app.log_text().count("served /")


def _app_health(mesh: DemoMesh, node: str) -> str:
    return next((v.row.app_health for v in mesh.proxy_status() if v.row.node == node), "")


def test_a_hung_app_leaves_rotation_and_returns_when_healed(demo_mesh: DemoMesh, tmp_path: Path) -> None:
    mesh = demo_mesh
    wanted = {n: ("default", "ratings") for n in ("ratings-a", "ratings-b")}
    tokens = asyncio.run(mint_tokens(mesh.nats.url, mesh.root, wanted, time.monotonic() + 10))
    _app_a, admin_a = _replica(mesh, tmp_path, "ratings-a", tokens["ratings-a"])
    app_b, admin_b = _replica(mesh, tmp_path, "ratings-b", tokens["ratings-b"])
    mesh.apply(RATINGS_VS, "ratings.yaml")
    wait_for("both ratings sidecars ready", lambda: is_ready(admin_a) and is_ready(admin_b), 20)
    wait_for("the client to see both replicas", lambda: _client_endpoints(mesh) == 2, 10)
    assert _app_health(mesh, "ratings-b") == "HEALTHY"

    with Traffic(lambda: _ratings(mesh)) as traffic:
        wait_for(
            "traffic on both replicas", lambda: traffic.ok["ratings-a"] > 5 and traffic.ok["ratings-b"] > 5
        )

        app_b.popen.send_signal(signal.SIGUSR1)  # ratings-b hangs, its health path included
        hung_at = time.monotonic()
        ready = wait_for(
            "ratings-b unready", lambda: (r := http_get(admin_b, "/ready", timeout=1)).status == 503 and r, 10
        )
        assert ready.body.startswith(b"APP_UNHEALTHY: GET :") and b"/healthz timed out" in ready.body, ready
        wait_for(
            "discovery to drop ratings-b from the client's endpoints",
            lambda: _client_endpoints(mesh) == 1,
            10,
        )
        removed_in = time.monotonic() - hung_at
        assert _app_health(mesh, "ratings-b") == "UNHEALTHY"
        traffic.wait_more(2)  # the client is sequential: what started on the old endpoint set is done
        reached = _served(app_b)
        traffic.wait_more(30)
        assert _served(app_b) == reached  # nothing reaches the hung app any more

        app_b.popen.send_signal(signal.SIGUSR2)  # healed
        healed_at = time.monotonic()
        wait_for("ratings-b ready again", lambda: is_ready(admin_b), 10)
        back = traffic.ok["ratings-b"]
        wait_for("traffic back on ratings-b", lambda: traffic.ok["ratings-b"] > back, 10)
        back_in = time.monotonic() - healed_at
        traffic.wait_more(20)
        assert _app_health(mesh, "ratings-b") == "HEALTHY"

    assert traffic.failures == [], traffic.failures[:5]
    print(f"hung app out of the client's endpoints in {removed_in * 1000:.0f} ms, healed one back in"
          f" {back_in * 1000:.0f} ms; {traffic.total()} requests, none failed")  # fmt: skip
