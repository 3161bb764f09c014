"""Issue 15, finding 3: a sidecar restarted with its single-use bootstrap token already spent renews
with the certificate it kept in its state directory and serves mTLS traffic again, restart after
restart (a crash, then a clean stop)."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.support.mesh import DemoMesh, poll_versions, vs_yaml
from tests.support.processes import http_get, is_ready, wait_for

pytestmark = pytest.mark.timeout(60)


def _certs(admin: int) -> dict[str, Any]:
    return dict(json.loads(http_get(admin, "/certs", timeout=1).body))


def test_restarted_sidecar_renews_with_its_kept_certificate(demo_mesh: DemoMesh) -> None:
    demo_mesh.apply(vs_yaml({"v1": 100}))
    poll_versions(demo_mesh, lambda c: c["v1"] == 20, timeout=5)
    admin = demo_mesh.ports.v1_admin
    serials = [_certs(admin)["serial"]]

    for how in (signal.SIGKILL, signal.SIGTERM):
        proc = demo_mesh.group.get("reviews-v1-sidecar")
        proc.stop(how)
        assert not is_ready(admin)
        # same command, same environment: MESHBUS_TOKEN is the token the first start used up
        proc = demo_mesh.group.respawn(proc)
        wait_for("the restarted sidecar ready", lambda: is_ready(admin), timeout=15)

        def renewed() -> dict[str, Any] | None:
            doc = _certs(admin)
            return doc if doc["state"] == "ACTIVE" and doc["serial"] not in serials else None

        doc = wait_for("a certificate renewed with the kept one", renewed, timeout=10)
        assert doc["renewals"] == 1 and doc["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
        serials.append(doc["serial"])
        # mTLS traffic from productpage reaches it again
        poll_versions(demo_mesh, lambda c: c["v1"] == 20, timeout=10)
        assert "restored certificate" in proc.log_text()
    ca_log = demo_mesh.group.get("meshbus-ca").log_text()
    assert ca_log.count("by renewal for node reviews-v1-sidecar") == 2, ca_log
