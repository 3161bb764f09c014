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


def _own(principal: str, *extra: str) -> list[str]:
    return sorted([f"{principal}-cert.pem", f"{principal}-key.pem", "server-ca.pem", *extra])


def test_each_consumer_gets_its_own_files_and_no_other_key(tmp_path: Path) -> None:
    files = _bus(tmp_path, [bus_auth.ProxyPrincipal("a", "spiffe://cluster.local/ns/default/sa/x"),
                            bus_auth.ProxyPrincipal("plain")])  # fmt: skip
    base = bus_auth.hand_out(files)
    folders = {p.name: sorted(f.name for f in p.iterdir()) for p in base.iterdir()}
    assert folders["nats"] == sorted(
        ["nats-server.conf", "server-cert.pem", "server-key.pem", "server-ca.pem"]
    )
    assert folders["operator"] == _own("operator")
    assert folders["discovery"] == _own("discovery", "snapshot-signing.pem")
    assert folders["ca"] == _own("ca", "snapshot-signing.pub.pem")
    assert folders["proxy"] == _own("bootstrap")
    assert folders["proxy-plain"] == _own("proxy-plain")
    for name, listing in folders.items():
        secrets = [f for f in listing if f.endswith("-key.pem") or f == "snapshot-signing.pem"]
        assert secrets, name
        for key in secrets:
            copy = base / name / key
            assert copy.read_bytes() == (files.dir / key).read_bytes()
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600, copy
        assert stat.S_IMODE((base / name).stat().st_mode) == 0o700
    # every component role has a folder holding only its own certificate and key (and the root)
    for role in ("config", "policy", "telemetry", "filter-host"):
        assert folders[role] == _own(role)


def test_a_second_run_keeps_keys_and_drops_what_left(tmp_path: Path) -> None:
    files = _bus(tmp_path, [bus_auth.ProxyPrincipal("plain")])
    base = bus_auth.hand_out(files)
    key = (base / "config" / "config-key.pem").read_bytes()
    (base / "config" / "operator-key.pem").write_bytes(b"left over from a mistake")
    bus_auth.hand_out(_bus(tmp_path, []))  # the plain proxy is gone from the mesh
    assert (base / "config" / "config-key.pem").read_bytes() == key
    assert sorted(p.name for p in (base / "config").iterdir()) == _own("config")
    assert not (base / "proxy-plain").exists()


def test_every_principal_has_a_reserved_id_and_its_certificate_names_only_that(tmp_path: Path) -> None:
    """Each client certificate carries one URI SAN, of the form the workload CA refuses (so no
    workload can map to a role's user), signed by the mesh root; a key is kept across runs."""
    from cryptography import x509

    from meshbus.bus.spiffe import SpiffeId

    files = _bus(tmp_path, [bus_auth.ProxyPrincipal("plain")])
    assert set(files.principals) == {*bus_auth.roles.COMPONENTS, "bootstrap", "proxy-plain"}
    assert files.principals["operator"] == "spiffe://cluster.local/meshbus/role/operator"
    assert files.principals["proxy-plain"] == "spiffe://cluster.local/meshbus/proxy/plain"
    root = x509.load_pem_x509_certificate(files.server_ca.read_bytes())
    for principal, uri in files.principals.items():
        assert SpiffeId.parse(uri).is_bus_principal and not SpiffeId.parse(uri).is_workload
        leaf = x509.load_pem_x509_certificates(files.cert(principal).read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == [x509.UniformResourceIdentifier(uri)], principal
        leaf.verify_directly_issued_by(root)
        assert stat.S_IMODE(files.key(principal).stat().st_mode) == 0o600
    key = files.key("ca").read_bytes()
    (files.dir / "ca.nk").write_bytes(b"an older meshbus's seed")
    assert _bus(tmp_path, []).key("ca").read_bytes() == key
    assert not list(files.dir.glob("*.nk"))  # no user has it any more: not left lying around
    conf = files.conf.read_text()
    assert "allow_non_tls" not in conf and "handshake_first" not in conf and '"verify_and_map": true' in conf
