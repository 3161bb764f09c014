"""`meshctl bus init --by-role`: each consumer's credentials in a folder of its own, for containers
that mount only theirs (docker-compose.yml's volume subpaths)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from meshbus.control.ca.material import load_or_create_root
from meshbus.control.cli import bus_auth

pytestmark = pytest.mark.timeout(30)


def _bus(tmp: Path, proxies: list[bus_auth.ProxyPrincipal]) -> bus_auth.BusFiles:
    material, _ = load_or_create_root(tmp / "ca", "cluster.local", None, dt.datetime.now(dt.UTC))
    return bus_auth.ensure_bus(tmp / "bus", material, root="mesh", proxies=proxies)


def test_each_consumer_gets_its_own_files_and_no_other_key(tmp_path: Path) -> None:
    files = _bus(tmp_path, [bus_auth.ProxyPrincipal("a", "spiffe://cluster.local/ns/default/sa/x"),
                            bus_auth.ProxyPrincipal("plain")])  # fmt: skip
    base = bus_auth.hand_out(files)
    folders = {p.name: sorted(f.name for f in p.iterdir()) for p in base.iterdir()}
    assert folders["nats"] == sorted(
        ["nats-server.conf", "server-cert.pem", "server-key.pem", "server-ca.pem"]
    )
    assert folders["operator"] == ["operator.nk"]
    assert folders["discovery"] == ["discovery.nk", "snapshot-signing.pem"]
    assert folders["ca"] == ["ca.nk", "snapshot-signing.pub.pem"]
    assert folders["proxy"] == ["bootstrap.nk", "server-ca.pem"]
    assert folders["proxy-plain"] == ["proxy-plain.nk", "server-ca.pem"]
    for name, listing in folders.items():
        keys = [f for f in listing if f.endswith(".nk") or f in ("server-key.pem", "snapshot-signing.pem")]
        for key in keys:
            copy = base / name / key
            assert copy.read_bytes() == (files.dir / key).read_bytes()
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600, copy
        assert stat.S_IMODE((base / name).stat().st_mode) == 0o700
    # every component role has a folder holding only its own seed
    for role in ("config", "policy", "telemetry", "filter-host"):
        assert folders[role] == [f"{role}.nk"]


def test_a_second_run_keeps_keys_and_drops_what_left(tmp_path: Path) -> None:
    files = _bus(tmp_path, [bus_auth.ProxyPrincipal("plain")])
    base = bus_auth.hand_out(files)
    seed = (base / "config" / "config.nk").read_bytes()
    (base / "config" / "operator.nk").write_bytes(b"left over from a mistake")
    bus_auth.hand_out(_bus(tmp_path, []))  # the plain proxy is gone from the mesh
    assert (base / "config" / "config.nk").read_bytes() == seed
    assert sorted(p.name for p in (base / "config").iterdir()) == ["config.nk"]
    assert not (base / "proxy-plain").exists()
