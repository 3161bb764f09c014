"""Issue 4, done-when 3: proxy-status shows every sidecar SYNCED, and NACK with the error for a proxy
handed a snapshot it cannot apply; the NACKing proxies keep serving their last good snapshot.

The bad snapshot comes from config the control plane accepts: a ServiceEntry with ``resolution:
NONE`` is valid Istio (passthrough to the original destination), but meshbus-proxy cannot build it,
so every proxy that sees it refuses the snapshot; meshbus-config accepts it with a warning that says so.
"""

from __future__ import annotations

import pytest

from meshbus.control.discovery.status import ProxyView
from tests.support.mesh import SIDECARS, DemoMesh
from tests.support.processes import wait_for

pytestmark = pytest.mark.timeout(60)

PASSTHROUGH_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
  namespace: default
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: NONE
  ports:
    - {number: 80, name: http, protocol: HTTP}
"""


class NotYet(Exception):
    """What proxy-status showed while the wait went on (wait_for reports the last one on timeout)."""


def _statuses(mesh: DemoMesh, want: str) -> dict[str, ProxyView]:
    views = {v.row.node: v for v in mesh.proxy_status()}
    if sorted(views) == sorted(SIDECARS) and all(v.status == want for v in views.values()):
        return views
    raise NotYet(
        {n: (v.status_text[:100], v.row.sent_version, v.row.acked_version) for n, v in views.items()}
    )


def test_synced_then_nack_with_error_then_synced(demo_mesh: DemoMesh) -> None:
    views = wait_for("every sidecar SYNCED", lambda: _statuses(demo_mesh, "SYNCED"), timeout=10)
    assert views["reviews-v2-sidecar"].row.labels["version"] == "v2"
    assert views["reviews-v1-sidecar"].row.service == "reviews"
    good = demo_mesh.config_version(demo_mesh.ports.client_admin)

    reply = demo_mesh.apply(PASSTHROUGH_ENTRY, file="legacy.yaml")
    (warning,) = reply.warnings  # accepted, with the fate the proxies will give it
    assert "ServiceEntry default/legacy: spec.resolution: NOT ENFORCED" in warning, warning

    views = wait_for("every sidecar NACKs", lambda: _statuses(demo_mesh, "NACK"), timeout=5)
    for node, view in views.items():
        error = view.row.nack_error
        assert "ServiceEntry default/legacy" in error and "spec.resolution" in error, (node, error)
        assert "not supported by meshbus-proxy" in error, error
        assert view.status_text.startswith("NACK"), view.status_text

    # a refused snapshot never replaces the last good one: same version, same traffic, still ready
    assert demo_mesh.config_version(demo_mesh.ports.client_admin) == good
    assert set(demo_mesh.versions(40)) <= {"v1", "v2"}
    demo_mesh.wait_ready(timeout=1)

    demo_mesh.delete("ServiceEntry", "legacy")
    wait_for("every sidecar SYNCED again", lambda: _statuses(demo_mesh, "SYNCED"), timeout=5)
