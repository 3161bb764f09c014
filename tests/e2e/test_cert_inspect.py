"""Issue 5: ``meshctl cert inspect PROXY_ID`` shows the certificate a running sidecar holds
(identity, issuer, validity, time to renewal), the same facts its admin ``/certs`` serves; an
unknown proxy is a clear error, and a sidecar without a bootstrap token says it has no identity."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshbus.bus.spiffe import load_pem_chain, svid_id
from tests.support.mesh import DemoMesh
from tests.support.processes import PYTHON, free_port, http_get, is_ready, wait_for

pytestmark = pytest.mark.timeout(60)

REVIEWS_ID = "spiffe://cluster.local/ns/default/sa/reviews"


def _meshctl(mesh: DemoMesh, *argv: str) -> subprocess.CompletedProcess[str]:
    meshctl = Path(sys.executable).parent / "meshctl"
    return subprocess.run(
        [str(meshctl), "cert", "inspect", *argv, "--nats", mesh.nats.url, "--subject-root", mesh.root],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_cert_inspect_a_sidecar_and_its_admin_certs(demo_mesh: DemoMesh) -> None:
    text = _meshctl(demo_mesh, "reviews-v1-sidecar")
    assert text.returncode == 0, text.stderr
    assert REVIEWS_ID in text.stdout
    for label in ("issuer", "notAfter", "expiresIn", "renewalAt", "renewalIn", "trustBundle"):
        assert label in text.stdout, text.stdout

    r = _meshctl(demo_mesh, "reviews-v1-sidecar.default", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    now = dt.datetime.now(dt.UTC)
    assert doc["proxy"] == "reviews-v1-sidecar" and doc["state"] == "ACTIVE"
    assert doc["identity"] == REVIEWS_ID
    renewal = dt.datetime.fromisoformat(doc["renewalAt"])
    not_after = dt.datetime.fromisoformat(doc["notAfter"])
    assert now < renewal < not_after  # renewal scheduled in the future, before expiry
    assert doc["renewalInSeconds"] > 0 and doc["trustBundle"]["roots"] >= 1
    leaf = load_pem_chain(doc["certChainPem"])[0]
    assert str(svid_id(leaf)) == REVIEWS_ID and f"{leaf.serial_number:x}" == doc["serial"]

    certs = http_get(demo_mesh.ports.v1_admin, "/certs")
    assert certs.status == 200 and certs.headers["content-type"] == "application/json"
    admin = json.loads(certs.body)
    for key in ("identity", "serial", "issuer", "notBefore", "notAfter", "renewalAt", "trustBundle"):
        assert admin[key] == doc[key], key
    # each sidecar has its own certificate
    other = json.loads(http_get(demo_mesh.ports.v2_admin, "/certs").body)
    assert other["identity"] == REVIEWS_ID and other["serial"] != doc["serial"]


def test_unknown_proxy_and_proxy_without_identity(demo_mesh: DemoMesh) -> None:
    r = _meshctl(demo_mesh, "no-such-proxy")
    assert r.returncode == 1
    assert "proxy 'no-such-proxy' did not answer" in r.stderr, r.stderr

    admin = free_port()
    demo_mesh.group.spawn(
        "plain-sidecar",
        [PYTHON, "-m", "meshbus.proxy", "--service", "reviews", "--service-account", "reviews",
         "--node-id", "plain-sidecar", "--labels", "version=v9", "--app-port", str(free_port()),
         "--service-port", "http=9080", "--outbound", "off", "--inbound", "127.0.0.1:0",
         "--admin", f"127.0.0.1:{admin}"],
    )  # fmt: skip
    wait_for("plain-sidecar /ready", lambda: is_ready(admin), 15)
    r = _meshctl(demo_mesh, "plain-sidecar")
    assert r.returncode == 0, r.stderr
    assert "NO_IDENTITY" in r.stdout and "no mesh identity" in r.stdout, r.stdout
    assert json.loads(http_get(admin, "/certs").body)["state"] == "NO_IDENTITY"
