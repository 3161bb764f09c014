"""A mesh-mode sidecar's life: not ready before its first snapshot, ready once the control plane
answers, deregistered at once on SIGTERM, and serving its saved snapshot after a restart while
NATS and the control plane are all down."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.embedded import EmbeddedNats
from meshbus.control.cli.demo_plan import DemoPorts, children
from tests.support.mesh import DISCOVERY_FAST, DemoMesh, poll_versions, vs_yaml
from tests.support.nats_server import require_binary
from tests.support.processes import PYTHON, ProcessGroup, free_port_block, http_get, is_ready, wait_for

pytestmark = pytest.mark.timeout(60)
CONTROL = ("meshbus-config", "meshbus-discovery", "meshbus-ca", "meshbus-policy")


def test_ready_gate_drain_and_restart_from_disk(tmp_path: Path, processes: ProcessGroup) -> None:
    require_binary()
    nats = EmbeddedNats(port=0, store_dir=str(tmp_path / "nats"))
    nats.start()
    try:
        base = free_port_block(DemoPorts.count())
        processes.env.update(MESHBUS_NATS_URL=nats.url, MESHBUS_SUBJECT_ROOT="e2e")
        mesh = DemoMesh(nats, processes, DemoPorts.starting_at(base), "e2e")
        plan = children(tmp_path, python=PYTHON, ports_from=base)

        # 1. data plane first: listening, but not ready without a snapshot
        for child in plan:
            if child.name not in CONTROL:
                processes.spawn(child.name, child.argv)
        admin = mesh.ports.client_admin
        r = wait_for("the productpage admin port", lambda: http_get(admin, "/ready", timeout=1))
        assert r.status == 503 and r.body.strip() == b"WAITING_FOR_SNAPSHOT", r
        r = http_get(mesh.ports.client_outbound, "/", host="reviews")
        assert (r.status, r.headers.get("x-meshbus-flags")) == (404, "NR"), r  # no routes yet

        # 2. control plane arrives: config applied, every sidecar turns ready and routes
        for child in plan:
            if child.name in CONTROL:
                processes.spawn(
                    child.name, child.argv + (DISCOVERY_FAST if "discovery" in child.name else ())
                )
        wait_for("the demo config applied", lambda: mesh.apply_demo_config(), 20)
        mesh.wait_ready()
        mesh.apply(vs_yaml({"v1": 100}))
        poll_versions(mesh, lambda c: c["v1"] == 20, timeout=5)

        # 3. SIGTERM: the sidecar leaves the registry at once (well before the 2 s heartbeat expiry)
        processes.get("reviews-v2-sidecar").stop()
        wait_for(
            "reviews-v2-sidecar gone from proxy-status",
            lambda: "reviews-v2-sidecar" not in {v.row.node for v in mesh.proxy_status()},
            timeout=1.0,
        )

        # 4. everything but the data plane down; a restarted sidecar serves its saved snapshot
        for name in CONTROL:
            processes.get(name).kill()
        nats.kill()
        client = processes.get("productpage-sidecar")
        client.stop()
        assert not is_ready(admin)
        processes.respawn(client)
        wait_for("productpage ready from its saved snapshot", lambda: is_ready(admin), timeout=10)
        assert mesh.versions(20) == {"v1": 20}
    finally:
        processes.stop_all()
        nats.cleanup()
