"""`meshctl up` runs the mesh on a secured bus by default, and the bus holds against its own users.

- Every credential is written 0600 in <data-dir>/bus (0700); meshctl finds the operator's by itself.
- A sidecar's own certificate (from its state directory) gets the sidecar's NATS user, and that user
  is refused publishing config, reading another sidecar's snapshot and answering CA requests.
- Only the operator mints bootstrap tokens: meshctl with another role's key says NATS refused it.
- A forged snapshot, published on a sidecar's subject by a user allowed to publish there (the
  operator), is refused by the sidecar (not signed / signed by an unknown key): counted, logged,
  NACKed, never applied; the same snapshot signed with discovery's key is applied (positive control).
- ``--insecure-bus`` turns all of it off.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.schemas.discovery import Snapshot, SnapshotAck
from meshbus.bus.signing import Signer, load_private_key
from meshbus.bus.subjects import Subjects
from meshbus.control.cli.bus_auth import BusFiles
from meshbus.control.cli.demo_plan import DemoPorts
from meshbus.control.cli.up_state import read_state
from meshbus.control.discovery.client import proxy_config
from tests.support.mesh import DEMO_CONFIG
from tests.support.processes import free_port_block, http_get, wait_for
from tests.support.secure_bus import SecureBus, refused_publish, refused_subscribe

pytestmark = pytest.mark.timeout(120)

MESHCTL = str(Path(sys.executable).parent / "meshctl")
S = Subjects("mesh")
NODE, OTHER = "reviews-v1-sidecar", "productpage-sidecar"


def _meshctl(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", MESHBUS_DATA_DIR=str(data_dir))
    env.pop("MESHBUS_NATS_NKEY", None)
    return subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Path, DemoPorts, str]]:
    base = free_port_block(DemoPorts.count())
    argv = ["up", "--nats-port", "0", "--data-dir", str(tmp_path), "--ports-from", str(base)]
    proc = subprocess.Popen(
        [MESHCTL, *argv, "--demo-config", str(DEMO_CONFIG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "meshbus is up" in line:
                break
        else:
            raise AssertionError("".join(seen))
        state = read_state(tmp_path)
        assert state is not None
        yield tmp_path, DemoPorts.starting_at(base), state.nats_url
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _checks(data_dir: Path, url: str) -> None:
    files = BusFiles(data_dir / "bus", data_dir / "bus" / "server-ca.pem")
    mesh = SecureBus(url, files, None, data_dir)
    try:
        sidecar_cert = data_dir / "sidecars" / NODE / "identity.pem"
        proxy = await mesh.as_proxy(NODE, identity_file=sidecar_cert)
        config, operator = await mesh.as_role("config"), await mesh.as_role("operator")
        await refused_publish(proxy, S.config("apply"), config)
        await refused_subscribe(proxy, S.xds_snapshot(OTHER), operator)
        await refused_subscribe(proxy, S.ca("certify"), await mesh.as_bootstrap("e2e"))
        await _forged_snapshots(mesh, operator, data_dir)
    finally:
        await mesh.close()


async def _forged_snapshots(mesh: SecureBus, operator: BusConnection, data_dir: Path) -> None:
    running = await proxy_config(operator, NODE)
    discovery = await mesh.as_role("discovery")  # may read the sidecar's ACKs
    acks = await discovery.nc.subscribe(S.xds_ack(NODE))
    await discovery.flush()
    forged = Snapshot(
        version=running.version + 100,
        digest=running.digest,
        node=NODE,
        nonce="forged-1",
        resources=running.resources,
        config_revision=running.config_revision,
    )
    data, headers = codec.encode(forged)
    stranger = Signer(load_private_key(_key_file(data_dir)))
    for extra in ({}, stranger.headers(data)):  # unsigned; signed by a key nobody trusts
        await operator.nc.publish(S.xds_snapshot(NODE), data, headers={**headers, **extra})
        nack = codec.decode((await acks.next_msg(timeout=10)).data, None, SnapshotAck)
        assert nack.nonce == "forged-1" and nack.version == forged.version, nack
        assert nack.error and "signed" in nack.error and nack.applied_version == running.version, nack
    assert (await proxy_config(operator, NODE)).version == running.version  # never applied
    # the same snapshot signed with discovery's key is applied: only the signature was wrong
    genuine = Signer(load_private_key(data_dir / "bus" / "snapshot-signing.pem"))
    await operator.nc.publish(S.xds_snapshot(NODE), data, headers={**headers, **genuine.headers(data)})
    ack = codec.decode((await acks.next_msg(timeout=10)).data, None, SnapshotAck)
    assert ack.error == "" and ack.applied_version == forged.version, ack


def _key_file(data_dir: Path) -> Path:
    from meshbus.bus.signing import generate_key_pem

    path = data_dir / "stranger.pem"
    path.write_bytes(generate_key_pem())
    return path


def test_meshctl_up_runs_the_mesh_on_a_secured_bus(up: tuple[Path, DemoPorts, str]) -> None:
    data_dir, ports, url = up
    bus_dir = data_dir / "bus"
    assert _mode(bus_dir) == 0o700
    secrets = [
        p
        for p in bus_dir.iterdir()
        if p.name.endswith("-key.pem") or p.name in ("snapshot-signing.pem", "nats-server.conf")
    ]
    assert {p.name for p in secrets} >= {
        "operator-key.pem",
        "config-key.pem",
        "discovery-key.pem",
        "ca-key.pem",
        "bootstrap-key.pem",
        "server-key.pem",
        "nats-server.conf",
    }
    assert not list(bus_dir.glob("*.nk"))  # no nkey: every client presents a certificate
    assert all(_mode(p) == 0o600 for p in secrets), {p.name: oct(_mode(p)) for p in secrets}
    assert _mode(data_dir / "sidecars" / NODE / "identity.pem") == 0o600
    assert http_get(ports.client_outbound, "/", host="reviews").status == 200
    log = (data_dir / "logs" / f"{NODE}.log").read_text()
    assert "first certificate obtained over the bootstrap connection" in log
    assert "snapshots must be signed by key(s)" in log  # and the routes above came in signed snapshots

    # meshctl finds the operator's certificate; with another role's, NATS refuses to mint tokens
    got = _meshctl(data_dir, "get", "virtualservices", "--nats", url)
    assert got.returncode == 0 and got.stderr == "", got.stderr  # over TLS, and nothing asyncio warns
    # the operator reads meshbus-telemetry (scatter-gather) and tails the access-log stream
    top = _meshctl(data_dir, "top", "--once", "-o", "json", "--nats", url, "--timeout", "5")
    assert top.returncode == 0, top.stdout + top.stderr
    logs = _meshctl(data_dir, "logs", "--since", "10m", "--nats", url, "--timeout", "5")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    other = _meshctl(data_dir, "token", "create", "-n", "default", "--service-account", "x", "--nats", url,
                     "--nats-cert", str(bus_dir / "config-cert.pem"), "--nats-key", str(bus_dir / "config-key.pem"),
                     "--timeout", "2")  # fmt: skip
    assert other.returncode == 1 and "NATS refused the request on mesh.v1.ca.token" in other.stderr, other
    nobody = _meshctl(Path("/nonexistent"), "get", "virtualservices", "--nats", url, "--timeout", "2")
    assert nobody.returncode == 1 and "TLS handshake with NATS" in nobody.stderr, nobody  # TLS only

    asyncio.run(_checks(data_dir, url))
    info = json.loads(http_get(ports.v1_admin, "/server_info").body)["mesh"]
    assert info["snapshots_refused"] == 2 and info["bus_tls"] and info["snapshot_keys"], info
    assert "refused a snapshot" in (data_dir / "logs" / f"{NODE}.log").read_text()


def test_insecure_bus_turns_it_off(tmp_path: Path) -> None:
    port = free_port_block(1)
    argv = ["up", "--no-demo", "--insecure-bus", "--nats-port", str(port), "--data-dir", str(tmp_path)]
    proc = subprocess.Popen([MESHCTL, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            "meshctl up --insecure-bus",
            lambda: (st := read_state(tmp_path)) is not None and st.state == "up",
            30,
        )

        async def anonymous() -> None:
            bus = BusConnection(BusSettings(url=f"nats://127.0.0.1:{port}", name="anyone", reconnect=False))
            await bus.connect(wait=False)  # no user, no key: an open server
            await bus.close()

        asyncio.run(anonymous())
        assert not (tmp_path / "bus").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
