"""AuthorizationPolicy with real processes: applied through meshbus-config, pushed by discovery to the
sidecar it selects, enforced over mTLS; ``meshctl authz check`` and ``explain`` as an operator runs
them. And a standalone meshbus-proxy enforcing the policies of its file.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path

import pytest

from meshbus.bus.errors import BusError
from tests.support.mesh import DemoMesh
from tests.support.processes import PYTHON, ProcessGroup, free_port, is_ready, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MESHCTL = str(Path(sys.executable).parent / "meshctl")

POLICIES = """\
apiVersion: meshbus.io/v1
kind: MeshConfig
metadata: {name: mesh, namespace: istio-system}
spec:
  pathNormalization: {normalization: MERGE_SLASHES}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin", "/admin/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: legacy
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/legacy*"]}}]}]
"""


def request(port: int, method: str, path: str, host: str = "reviews") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=b"x" if method == "POST" else None, headers={"Host": host})
        with conn.getresponse() as r:
            return r.status, r.read()
    finally:
        conn.close()


def meshctl(mesh: DemoMesh, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [MESHCTL, *argv, "--nats", mesh.nats.url, "--subject-root", mesh.root]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_policies_applied_to_the_mesh_are_enforced_by_the_selected_sidecars(demo_mesh: DemoMesh) -> None:
    port = demo_mesh.ports.client_outbound
    assert request(port, "POST", "/")[0] == 200  # no policy yet: every caller, every method
    reply = demo_mesh.apply(POLICIES, "policies.yaml")
    assert not [w for w in reply.warnings if "AuthorizationPolicy" in w], reply.warnings
    wait_for(
        "the policies to reach the reviews sidecars", lambda: request(port, "POST", "/")[0] == 403 or None, 20
    )
    for _ in range(10):  # both reviews sidecars (90/10) enforce them
        assert request(port, "GET", "/reviews/1")[0] == 200
        assert request(port, "POST", "/") == (403, b"RBAC: access denied")
        assert request(port, "GET", "//admin")[0] == 403  # MERGE_SLASHES: //admin is /admin
    assert request(port, "GET", "/legacy/x")[0] == 200  # a dry run decides nothing

    check = meshctl(demo_mesh, "authz", "check", "reviews-v1-sidecar")
    assert check.returncode == 0, check.stderr
    out = check.stdout
    assert "MERGE_SLASHES" in out and "istio-system/mesh" in out
    assert out.index("ns[default]-policy[no-admin]-rule[0]") < out.index(
        "ns[default]-policy[reviews-readers]-rule[0]"
    )
    assert "DENY (dry run)" in out and "ns[default]-policy[legacy]-rule[0]" in out
    none = meshctl(demo_mesh, "authz", "check", "productpage-sidecar")
    assert "No AuthorizationPolicy applies to productpage-sidecar" in none.stdout

    explain = meshctl(
        demo_mesh, "authz", "explain", "--from", "default/ratings", "--to", "reviews", "--path", "/reviews/1"
    )
    assert explain.returncode == 0, explain.stderr
    assert explain.stdout.startswith("DENY: ALLOW policies apply and none of their rules matches")
    allowed = meshctl(demo_mesh, "authz", "explain", "--from", "productpage", "--to", "reviews", "-o", "json")
    assert (
        '"decision": "ALLOW"' in allowed.stdout
        and '"rule": "ns[default]-policy[reviews-readers]-rule[0]"' in allowed.stdout
    )

    second = POLICIES.split("---")[0].replace("name: mesh,", "name: mesh-2,")
    with pytest.raises(BusError, match=r"MB0002.*a mesh has one MeshConfig"):
        demo_mesh.apply(second, "second.yaml")


STANDALONE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: health-only, namespace: default}
spec:
  selector: {matchLabels: {app: shelf}}
  rules: [{to: [{operation: {paths: [/healthz], methods: [GET]}}]}]
"""


def test_a_standalone_proxy_enforces_the_policies_of_its_file(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    app_port, inbound, admin = free_port(), free_port(), free_port()
    processes.spawn(
        "app",
        [
            PYTHON,
            "-m",
            "meshbus.control.demo.app",
            "--name",
            "shelf",
            "--version",
            "v1",
            "--port",
            str(app_port),
        ],
    )
    config = tmp_path / "shelf.yaml"
    config.write_text(STANDALONE)
    processes.spawn(
        "proxy",
        [
            PYTHON, "-m", "meshbus.proxy", "--config", str(config), "--namespace", "default",
            "--labels", "app=shelf", "--app-port", str(app_port), "--inbound", f"127.0.0.1:{inbound}",
            "--outbound", "off", "--admin", f"127.0.0.1:{admin}",
        ],
    )  # fmt: skip
    wait_for("the proxy's admin /ready", lambda: is_ready(admin) or None, timeout=30)
    wait_for("the app", lambda: request(inbound, "GET", "/healthz")[0] == 200 or None, timeout=10)
    assert request(inbound, "GET", "/books") == (403, b"RBAC: access denied")
    assert request(inbound, "POST", "/healthz")[0] == 403
