"""meshbus-ca and meshctl as real processes: root generated on first start, token via meshctl,
a CSR signed over the bus, ``meshctl ca bundle`` + ``openssl verify``, ``meshctl cert inspect``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from meshbus.bus import BusConnection, codec, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.identity import CertifyRequest, CertifyResponse, TrustBundle
from meshbus.bus.spiffe import load_pem_chain
from tests.integration.control.ca_helpers import WEB
from tests.support.processes import run_command
from tests.unit.control.ca.pki import csr_pem, pem

pytestmark = pytest.mark.timeout(40)


async def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    code, out, err = await run_command(*argv, env=env)
    return code, out.decode(), err.decode()


async def test_meshbus_ca_process_end_to_end(
    nats_server: EmbeddedNats, bus: BusConnection, tmp_path: Path
) -> None:
    conn_args = ("--nats", nats_server.url, "--subject-root", bus.subjects.root)
    bundles: asyncio.Queue[TrustBundle] = asyncio.Queue()

    async def on_bundle(msg: Msg) -> None:
        bundles.put_nowait(codec.decode(msg.data, msg.headers, TrustBundle))

    await bus.subscribe(bus.subjects.ca_bundle_changed(), on_bundle)
    await bus.flush()
    ca_dir = tmp_path / "ca"
    env = {**os.environ, "MESHBUS_CA_PASSPHRASE": "s3cret passphrase"}
    ca = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshbus.control.ca", *conn_args, "--ca-dir", str(ca_dir),
        "--workload-cert-ttl", "2h", "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        # the first bundle event is published once the endpoints answer
        bundle = await asyncio.wait_for(bundles.get(), 20)
        assert len(bundle.roots) == 1 and bundle.roots[0].active
        key_file = ca_dir / "ca-key.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert b"ENCRYPTED" in key_file.read_bytes()

        meshctl = (sys.executable, "-m", "meshbus.control.cli")
        code, token, err = await _run(
            *meshctl, "token", "create", "--namespace", "default", "--service-account", "web", "--uses", "1",
            *conn_args,
        )  # fmt: skip
        assert code == 0, err
        token = token.strip()
        assert token.startswith("mbt1.") and "spiffe://cluster.local/ns/default/sa/web" in err

        key = ec.generate_private_key(ec.SECP256R1())
        resp = await rpc.request(
            bus, bus.subjects.ca("certify"), CertifyRequest(csr_pem(key, WEB), token=token), CertifyResponse
        )
        leaf = load_pem_chain(resp.cert_chain_pem)[0]
        assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 2 * 3600 + 60

        code, bundle_pem, err = await _run(*meshctl, "ca", "bundle", *conn_args)
        assert code == 0, err
        assert load_pem_chain(bundle_pem) == load_pem_chain(bundle.roots[0].cert_pem)
        (tmp_path / "bundle.pem").write_text(bundle_pem)
        (tmp_path / "leaf.pem").write_bytes(pem(leaf))
        if shutil.which("openssl"):
            code, out, err = await _run(
                "openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem"), str(tmp_path / "leaf.pem")
            )
            assert code == 0 and "OK" in out, out + err

        code, out, err = await _run(
            *meshctl, "cert", "inspect", "--file", str(tmp_path / "leaf.pem"),
            "--bundle", str(tmp_path / "bundle.pem"), "-o", "json",
        )  # fmt: skip
        assert code == 0, err
        doc = json.loads(out)
        assert doc["identity"] == "spiffe://cluster.local/ns/default/sa/web"
        assert doc["chain"] == "verified against the bundle"
        assert doc["lifetime"] == "2h1m"
    finally:
        ca.send_signal(signal.SIGTERM)
        _out, err_bytes = await asyncio.wait_for(ca.communicate(), 15)
    assert ca.returncode == 0, err_bytes.decode()[-2000:]
    assert b"generated a new mesh root" in err_bytes


async def test_meshbus_ca_refuses_bad_material(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("nope")
    code, _out, err = await _run(
        sys.executable, "-m", "meshbus.control.ca", "--ca-cert", str(tmp_path / "ca.pem"),
        "--ca-key", str(tmp_path / "ca.key"),
    )  # fmt: skip
    assert code == 2
    assert "meshbus-ca: meshbus: CA certificate file holds no PEM certificate" in err
    code, _out, err = await _run(
        sys.executable, "-m", "meshbus.control.ca", "--trust-domain", "Bad_Domain:80"
    )
    assert code == 2 and "trust domain" in err
