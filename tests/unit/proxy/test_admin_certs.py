"""Admin /certs: the certificate a mesh-mode proxy holds, as meshctl cert inspect -o json shows it."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from meshbus.bus.cert_report import certificate_info
from meshbus.bus.schemas.identity import CERT_ACTIVE, CERT_NO_IDENTITY, ProxyCertsReply
from meshbus.proxy.adapters.admin import AdminServer
from tests.unit.control.ca.pki import root, svid


def _get(server: Any, path: str) -> tuple[int, dict[str, Any]]:
    raw = AdminServer(server).answer("GET", path)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/json" in head
    return int(head.split()[1]), json.loads(body)


def test_certs_shows_the_held_certificate() -> None:
    ca = root()
    _tls, issued = svid(ca, "default", "reviews")
    renewal_at = time.time() + 3600
    info = certificate_info(issued.chain_pem, bundle_pem=ca.root_pem, bundle_version=2, renewal_at=renewal_at)
    reply = ProxyCertsReply(node="reviews-v1", state=CERT_ACTIVE, spiffe_id=info.spiffe_id, certificate=info)
    status, doc = _get(SimpleNamespace(cert_report=lambda: reply), "/certs")
    assert status == 200
    assert doc["proxy"] == "reviews-v1" and doc["state"] == CERT_ACTIVE
    assert doc["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert doc["serial"] == issued.serial_hex and doc["trustBundle"] == {"version": 2, "roots": 1}
    assert 3590 <= doc["renewalInSeconds"] <= 3600
    assert doc["certChainPem"] == issued.chain_pem.decode()


def test_certs_of_a_proxy_without_identity() -> None:
    for server in (SimpleNamespace(cert_report=None), SimpleNamespace()):  # standalone proxy
        status, doc = _get(server, "/certs")
        assert status == 200 and doc == {"proxy": "", "state": CERT_NO_IDENTITY, "identity": ""}


def test_certs_report_failure_is_a_500_not_a_crash() -> None:
    def broken() -> ProxyCertsReply:
        raise RuntimeError("boom")

    raw = AdminServer(SimpleNamespace(cert_report=broken)).answer("GET", "/certs")
    assert raw.startswith(b"HTTP/1.1 500") and b"meshbus: admin error: boom" in raw
