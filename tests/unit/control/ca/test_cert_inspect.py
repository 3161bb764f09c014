"""meshctl cert inspect: the facts it shows for a certificate file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from meshbus.bus.spiffe import load_pem_chain
from meshbus.control.cli import ca_cmds
from meshbus.control.cli.__main__ import build_parser

from .pki import NOW, TD, intermediate, root, svid


def test_describe_valid_chain_through_intermediate() -> None:
    company = root()
    _tls, issued = svid(intermediate(company), "bookinfo", "reviews")
    chain = load_pem_chain(issued.chain_pem)
    doc = ca_cmds.describe_certificate(chain, NOW + dt.timedelta(hours=1), [company.root], TD)
    assert doc["identity"] == "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert doc["chain"] == "verified against the bundle"
    assert doc["expiresIn"] == "23h" and doc["lifetime"] == "1d1m"
    assert doc["renewalIn"] == "10h59m30s"  # notBefore (NOW - 1m) + half of 24h1m, seen at NOW + 1h
    assert doc["serverAndClientAuth"] is True and doc["chainLength"] == 2


def test_describe_expired_and_untrusted() -> None:
    ca = root()
    _tls, issued = svid(ca)
    chain = load_pem_chain(issued.chain_pem)
    late = ca_cmds.describe_certificate(chain, NOW + dt.timedelta(days=2), [ca.root], TD)
    assert late["expiresIn"] == "EXPIRED" and late["renewalIn"] == "due"
    assert late["chain"].startswith("NOT valid (expired)")
    foreign = ca_cmds.describe_certificate(chain, NOW, [root().root], TD)
    assert foreign["chain"].startswith("NOT valid (untrusted)")


def test_cli_inspect_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = root()
    _tls, issued = svid(ca)
    (tmp_path / "leaf.pem").write_bytes(issued.chain_pem)
    (tmp_path / "bundle.pem").write_bytes(root().root_pem)
    args = build_parser().parse_args(["cert", "inspect", "--file", str(tmp_path / "leaf.pem")])
    assert args.func(args) == 0
    assert "spiffe://cluster.local/ns/default/sa/web" in capsys.readouterr().out
    args = build_parser().parse_args(
        ["cert", "inspect", "-f", str(tmp_path / "leaf.pem"), "--bundle", str(tmp_path / "bundle.pem")]
    )
    assert args.func(args) == 1  # another mesh's bundle: shown, and a failing exit code
    assert "NOT valid (untrusted)" in capsys.readouterr().out
    args = build_parser().parse_args(["cert", "inspect", "-f", str(tmp_path / "missing.pem")])
    assert args.func(args) == 1
