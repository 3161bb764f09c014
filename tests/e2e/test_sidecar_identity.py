"""A sidecar with a bootstrap token is ready only once it holds its certificate: it waits while
meshbus-ca is down and turns ready when the CA returns; a refused token keeps it unready, saying why."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshbus.control.cli.up import mint_tokens
from tests.support.mesh import DemoMesh
from tests.support.processes import PYTHON, free_port, http_get, is_ready, wait_for

pytestmark = pytest.mark.timeout(60)


def _sidecar(mesh: DemoMesh, name: str, token: str) -> int:
    admin = free_port()
    mesh.group.spawn(
        name,
        [PYTHON, "-m", "meshbus.proxy", "--service", "reviews", "--service-account", "reviews",
         "--node-id", name, "--labels", "version=v3", "--app-port", str(free_port()),
         "--service-port", "http=9080", "--outbound", "off", "--inbound", "127.0.0.1:0",
         "--admin", f"127.0.0.1:{admin}"],
        env={"MESHBUS_TOKEN": token},
    )  # fmt: skip
    return admin


def _ready_body(admin: int) -> bytes:
    return http_get(admin, "/ready", timeout=1).body.strip()


def test_readiness_waits_for_the_certificate(demo_mesh: DemoMesh) -> None:
    tokens = asyncio.run(
        mint_tokens(demo_mesh.nats.url, demo_mesh.root, {"v3": ("default", "reviews")}, time.monotonic() + 10)
    )
    ca = demo_mesh.group.get("meshbus-ca")
    ca.kill()
    admin = _sidecar(demo_mesh, "reviews-v3-sidecar", tokens["v3"])
    # the snapshot arrives (discovery is up), the certificate cannot: still not ready, and why
    wait_for("WAITING_FOR_CERTIFICATE", lambda: _ready_body(admin) == b"WAITING_FOR_CERTIFICATE", 10)
    demo_mesh.group.respawn(ca)
    wait_for("ready once meshbus-ca is back", lambda: is_ready(admin), 15)


def test_refused_token_keeps_the_sidecar_unready(demo_mesh: DemoMesh) -> None:
    admin = _sidecar(demo_mesh, "reviews-bad-token", "mbt1.notatoken.notasecret")
    wait_for("CERTIFICATE_REFUSED", lambda: _ready_body(admin) == b"CERTIFICATE_REFUSED", 10)
    log = demo_mesh.group.get("reviews-bad-token").log_text()
    assert "spiffe://cluster.local/ns/default/sa/reviews refused" in log, log[-2000:]
