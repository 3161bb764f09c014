"""mTLS between real sidecars, seen from outside as an operator would check it.

`openssl s_client` (with a workload certificate obtained from the running meshbus-ca) against a
sidecar's inbound port shows a chain that verifies against the root `meshctl ca bundle` exports,
whose leaf has the destination's SPIFFE ID as its only URI SAN. A PeerAuthentication STRICT for
the namespace refuses a plaintext client while sidecar-to-sidecar traffic keeps flowing; back to
PERMISSIVE, plaintext is served again.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.spiffe import SpiffeId
from meshbus.control.cli.up import mint_tokens
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig
from tests.support.mesh import DemoMesh
from tests.support.processes import http_get, wait_for

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]

PEER_AUTH = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: {mode}
"""


def _workload_cert(mesh: DemoMesh, tmp: Path) -> tuple[Path, Path]:
    async def go() -> tuple[bytes, bytes]:
        tokens = await mint_tokens(
            mesh.nats.url, mesh.root, {"probe": ("default", "probe")}, time.monotonic() + 10
        )
        bus = BusConnection(BusSettings(url=mesh.nats.url, root=mesh.root, name="e2e-probe"))
        await bus.connect()
        client = CertClient(
            bus,
            CertClientConfig(
                SpiffeId.parse("spiffe://cluster.local/ns/default/sa/probe"), token=tokens["probe"]
            ),
        )
        try:
            ident = await asyncio.wait_for(client.start(), 15)
            key = ident.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            chain = ident.cert_chain_pem
            return (chain if isinstance(chain, bytes) else chain.encode()), key
        finally:
            await client.stop()
            await bus.close()

    chain, key = asyncio.run(go())
    (tmp / "probe.pem").write_bytes(chain)
    (tmp / "probe.key").write_bytes(key)
    return tmp / "probe.pem", tmp / "probe.key"


def _bundle(mesh: DemoMesh, tmp: Path) -> Path:
    meshctl = Path(sys.executable).parent / "meshctl"
    r = subprocess.run(
        [str(meshctl), "ca", "bundle", "--nats", mesh.nats.url, "--subject-root", mesh.root],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 0, r.stderr
    assert "BEGIN CERTIFICATE" in r.stdout
    (tmp / "bundle.pem").write_text(r.stdout)
    return tmp / "bundle.pem"


def _plaintext_refused(port: int) -> bool:
    try:
        http_get(port, "/", host="reviews", timeout=2)
    except OSError:
        return True  # connection closed without an HTTP answer: STRICT refused it
    return False


def test_openssl_sees_a_spiffe_svid_and_strict_refuses_plaintext(demo_mesh: DemoMesh, tmp_path: Path) -> None:
    cert, key = _workload_cert(demo_mesh, tmp_path)
    bundle = _bundle(demo_mesh, tmp_path)
    port = demo_mesh.ports.v1_inbound

    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(bundle), "-cert", str(cert),
         "-key", str(key), "-showcerts", "-verify_return_error", "-ign_eof"],
        input="GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n",
        capture_output=True, text=True, timeout=20, env=dict(os.environ, LC_ALL="C"),
    )  # fmt: skip
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert "HTTP/1.1 200" in r.stdout and '"version": "v1"' in r.stdout
    leaf_pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", r.stdout, re.S)
    assert leaf_pem is not None
    leaf = x509.load_pem_x509_certificate(leaf_pem.group(0).encode())
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://cluster.local/ns/default/sa/reviews"]

    # default PERMISSIVE: a plaintext client reaches the app through the inbound port
    assert http_get(port, "/", host="reviews").status == 200

    demo_mesh.apply(PEER_AUTH.format(mode="STRICT"), file="strict.yaml")
    wait_for("STRICT to reach the reviews sidecars", lambda: _plaintext_refused(port), 10)
    # sidecar to sidecar is mTLS, so the mesh keeps working under STRICT
    assert set(demo_mesh.versions(40)) <= {"v1", "v2"}

    demo_mesh.apply(PEER_AUTH.format(mode="PERMISSIVE"), file="permissive.yaml")
    wait_for("PERMISSIVE to serve plaintext again", lambda: not _plaintext_refused(port), 10)
