"""Seed corpus of the fuzz targets (tests/fuzz/targets.py), written to tests/fuzz/corpus/<target>/.

``python -m tests.fuzz.seeds`` rewrites the ``seed-*`` files; what a long run (`make fuzz`) found
worth keeping sits beside them. Each file is one complete case: the target's parameter byte, then
its input. The config target also reads tests/golden/config (every valid and invalid example).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack

from meshbus.bus import codec
from meshbus.bus.schemas.discovery import Heartbeat, Register, Snapshot, SnapshotAck
from meshbus.bus.schemas.identity import CertifyRequest, TrustBundle, TrustRoot
from tests.fuzz import jwt_case
from tests.support import smuggling

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
GOLDEN = HERE.parent / "golden" / "config"

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /a HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw",
    b"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://reviews/x?y=1 HTTP/1.0\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
]


def _messages() -> list[bytes]:
    reg = Register(node_id="reviews-v1", service="reviews", labels={"version": "v1"}, ports={"http": 9080})
    msgs = [
        Heartbeat(reg, applied_version=3, seq=1),
        Snapshot(version=4, digest="d", node="reviews-v1", nonce="n", resources=[{"kind": "VirtualService"}]),
        SnapshotAck("reviews-v1", "n", 4, error="no"),
        CertifyRequest(csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n", token="t"),
        TrustBundle("cluster.local", (TrustRoot("-----BEGIN CERTIFICATE-----\n", 1.0, True),), 2),
    ]
    names = [sid for sid, _ in sorted(codec.registered().items())]
    out = []
    for m in msgs:
        data, headers = codec.encode(m)
        index = names.index(headers[codec.SCHEMA_HEADER])
        out.append(bytes([(index << 1 | 1) & 0xFF]) + data)
    out.append(b"\x00" + msgpack.packb({"node_id": 1, "service": None, "labels": [1, 2]}))
    return out


def seeds() -> dict[str, list[bytes]]:
    return {
        "http1_request": [b"\x80" + r for r in REQUESTS] + [b"\x80" + v.build(0) for v in smuggling.VECTORS],
        "http1_response": [bytes([p]) + r for r in RESPONSES for p in (0, 1, 2, 0x83)],
        "config": [],  # tests/golden/config is read directly
        "bus_message": _messages(),
        "jwt": jwt_case.seeds(),
    }


SUITE_SAMPLE = 120
"""At most this many corpus files of a target replay in the suite (every crash and golden example
does); `make fuzz` starts from all of them."""


def corpus(target: str, *, sample: int | None = None) -> list[bytes]:
    """Kept cases of ``target``: its corpus (every ``sample``-th share of it when given), its crashes,
    and (config) the golden examples."""
    kept = sorted(f for f in (CORPUS / target).glob("*") if f.is_file() and f.name != ".keep")
    if sample is not None and len(kept) > sample:
        kept = kept[:: -(-len(kept) // sample)]
    files = kept + sorted(f for f in (CRASHES / target).glob("*") if f.is_file())
    if target == "config":
        files += sorted(GOLDEN.glob("*.yaml"))
    return [f.read_bytes() for f in files]


def main() -> None:  # pragma: no cover - regenerates the committed seed files
    for target, cases in seeds().items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for case in cases:
            (d / f"seed-{hashlib.sha1(case).hexdigest()[:12]}").write_bytes(case)
    print("wrote", {t: len(c) for t, c in seeds().items()})


if __name__ == "__main__":  # pragma: no cover
    main()
