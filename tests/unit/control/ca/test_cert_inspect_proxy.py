"""meshctl cert inspect PROXY_ID: the facts it shows for the certificate a proxy reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.cert_report import certificate_info
from meshbus.bus.schemas.identity import (
    CERT_ACTIVE,
    CERT_NO_IDENTITY,
    CERT_REFUSED,
    ProxyCertsReply,
)
from meshbus.control.cli import ca_cmds
from meshbus.control.cli.__main__ import build_parser

from .pki import NOW, root, svid

T0 = NOW.timestamp()


def _active(renewal_in: float, renewal_failures: int = 0) -> ProxyCertsReply:
    ca = root()
    _tls, issued = svid(ca, "default", "reviews")  # notBefore NOW - 1m, notAfter NOW + 24h
    info = certificate_info(
        issued.chain_pem, bundle_pem=ca.root_pem, bundle_version=4, renewal_at=T0 + renewal_in
    )
    return ProxyCertsReply(
        node="reviews-v1-sidecar",
        state=CERT_ACTIVE,
        spiffe_id=info.spiffe_id,
        certificate=info,
        last_error="ca unreachable" if renewal_failures else "",
        renewal_failures=renewal_failures,
    )


def test_doc_and_text_of_an_active_certificate() -> None:
    doc = ca_cmds.proxy_cert_doc(_active(renewal_in=3 * 3600 + 5), T0)
    assert doc["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert doc["lifetime"] == "1d1m" and doc["expiresIn"] == "1d"
    assert doc["renewalIn"] == "3h5s" and doc["renewalInSeconds"] == 3 * 3600 + 5
    rows = dict(ca_cmds.proxy_cert_rows(doc))
    assert rows["proxy"] == "reviews-v1-sidecar" and rows["identity"] == doc["identity"]
    assert rows["issuer"].startswith("CN=") and rows["renewalIn"] == "3h5s"
    assert rows["trustBundle"] == "version 4, 1 root(s)"
    assert "state" not in rows and "certChainPem" not in rows and "lastError" not in rows


def test_overdue_renewal_and_expiry_are_called_so() -> None:
    reply = _active(renewal_in=-60, renewal_failures=3)
    assert reply.certificate is not None
    doc = ca_cmds.proxy_cert_doc(reply, T0)
    assert doc["renewalIn"] == "due"
    rows = dict(ca_cmds.proxy_cert_rows(doc))
    assert rows["lastError"] == "ca unreachable" and rows["renewalFailures"] == "3"
    late = ca_cmds.proxy_cert_doc(reply, reply.certificate.not_after + 1)
    assert late["expiresIn"] == "EXPIRED" and late["expired"] is True


def test_text_says_when_there_is_no_certificate() -> None:
    rows = ca_cmds.proxy_cert_rows(ca_cmds.proxy_cert_doc(ProxyCertsReply(node="plain"), T0))
    assert rows[0] == ("proxy", "plain")
    assert rows[1][0] == "state" and rows[1][1].startswith(f"{CERT_NO_IDENTITY} (no mesh identity")
    refused = ProxyCertsReply(
        node="x", state=CERT_REFUSED, spiffe_id="spiffe://cluster.local/ns/a/sa/b", last_error="token expired"
    )
    rows = dict(ca_cmds.proxy_cert_rows(ca_cmds.proxy_cert_doc(refused, T0)))
    assert "refused its bootstrap token" in rows["state"] and rows["lastError"] == "token expired"
    assert rows["identity"] == "spiffe://cluster.local/ns/a/sa/b"


def test_proxy_id_and_file_are_exclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["cert", "inspect"])
    assert args.func(args) == 2
    args = build_parser().parse_args(["cert", "inspect", "p1", "--file", str(tmp_path / "x.pem")])
    assert args.func(args) == 2
    assert "give a PROXY_ID or --file" in capsys.readouterr().err
