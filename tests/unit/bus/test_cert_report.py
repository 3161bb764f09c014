"""The certificate facts a proxy reports (CertificateInfo) and the doc /certs and meshctl show."""

from __future__ import annotations

import datetime as dt

import msgpack
import pytest

from meshbus.bus import codec
from meshbus.bus.cert_report import certificate_info, certs_doc
from meshbus.bus.schemas.identity import (
    CERT_ACTIVE,
    CERT_NO_IDENTITY,
    CERT_WAITING,
    ProxyCertsReply,
)
from tests.unit.control.ca.pki import NOW, intermediate, root, svid

T0 = NOW.timestamp()


def test_certificate_info_from_a_chain_through_an_intermediate() -> None:
    company = root()
    inter = intermediate(company)
    _tls, issued = svid(inter, "bookinfo", "reviews")
    bundle = company.root_pem + root().root_pem  # mid root rotation: two roots trusted
    info = certificate_info(issued.chain_pem, bundle_pem=bundle, bundle_version=7, renewal_at=T0 + 3600)
    assert info.spiffe_id == "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert info.serial == issued.serial_hex
    assert info.issuer == "CN=meshbus intermediate"
    assert info.not_after == issued.leaf.not_valid_after_utc.timestamp()
    assert info.not_before < T0 < info.not_after
    assert (info.chain_length, info.bundle_version, info.bundle_roots) == (2, 7, 2)
    assert info.cert_chain_pem == issued.chain_pem.decode()
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_info(b"")


def test_doc_of_an_active_certificate() -> None:
    _tls, issued = svid(root())
    info = certificate_info(issued.chain_pem, renewal_at=T0 + 600, renewals=3)
    reply = ProxyCertsReply(node="web-1", state=CERT_ACTIVE, spiffe_id=info.spiffe_id, certificate=info)
    doc = certs_doc(reply, T0)
    assert doc["identity"] == "spiffe://cluster.local/ns/default/sa/web"
    assert doc["renewalInSeconds"] == 600 and doc["renewals"] == 3
    assert doc["renewalAt"] == dt.datetime.fromtimestamp(T0 + 600, dt.UTC).isoformat(timespec="seconds")
    assert doc["expired"] is False and doc["expiresInSeconds"] == round(info.not_after - T0)
    assert doc["certChainPem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "certChainPem" not in certs_doc(reply, T0, with_pem=False)
    late = certs_doc(reply, info.not_after + 5)
    assert late["expired"] is True and late["expiresInSeconds"] == 0 and late["renewalInSeconds"] == 0


def test_doc_without_a_certificate_says_why() -> None:
    assert certs_doc(ProxyCertsReply(node="plain"), T0) == {
        "proxy": "plain",
        "state": CERT_NO_IDENTITY,
        "identity": "",
    }
    waiting = ProxyCertsReply(
        node="w", state=CERT_WAITING, spiffe_id="spiffe://cluster.local/ns/a/sa/b", last_error="ca down"
    )
    doc = certs_doc(waiting, T0)
    assert (
        doc["state"] == CERT_WAITING and doc["identity"].endswith("/sa/b") and doc["lastError"] == "ca down"
    )
    assert "notAfter" not in doc


def test_reply_round_trips_and_old_peers_still_decode() -> None:
    _tls, issued = svid(root())
    info = certificate_info(issued.chain_pem, renewal_at=T0 + 1)
    reply = ProxyCertsReply(node="n", state=CERT_ACTIVE, spiffe_id=info.spiffe_id, certificate=info)
    data, headers = codec.encode(reply)
    assert codec.decode(data, headers, ProxyCertsReply) == reply
    # a newer proxy adds fields: this reader ignores them; an older one sends fewer: defaults fill in
    newer = msgpack.packb({"node": "n", "state": CERT_ACTIVE, "future": 1}, use_bin_type=True)
    assert codec.decode(newer, headers, ProxyCertsReply) == ProxyCertsReply(node="n", state=CERT_ACTIVE)
