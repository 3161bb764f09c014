"""CSRs signed per second by one meshbus-ca process (issue 5 target: >= 500/s).

    .venv/bin/python bench/ca_sign.py [--n 2000] [--concurrency 32] [--json]

Three figures:

- ``in-process``: `parse_csr` + `Issuer.sign` + PEM encoding in a loop (the CA's CPU cost alone).
- ``bus, token``: a real ``meshbus-ca`` process (embedded nats-server) answering ``certify`` with a
  bootstrap token, i.e. CSR checks + one JetStream KV compare-and-set per request + signing.
- ``bus, renewal``: the same process answering renewals (current chain + proof; no KV, one
  chain verification + one signature check more).

CSRs and keys are made before the clock starts (they are the proxies' cost, not the CA's);
``--concurrency`` requests are in flight at once from one client connection. The CA process
is pinned to CPU 1 and the client to CPU 0 when ``taskset`` exists (2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from meshbus.bus import BusConnection, BusSettings, codec, rpc
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.identity import (
    CertifyRequest,
    CertifyResponse,
    TokenCreateReply,
    TokenCreateRequest,
    TrustBundle,
)
from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca.issuer import Issuer, IssuerConfig, generate_root
from meshbus.control.ca.validator import parse_csr
from meshbus.proxy.mesh.identity import make_csr, renewal_proof

TD = "cluster.local"
SID = SpiffeId.workload(TD, "bench", "client")


def in_process(n: int) -> float:
    now = dt.datetime.now(dt.UTC)
    issuer = Issuer(generate_root(TD, now), IssuerConfig())
    csrs = [
        make_csr(ec.generate_private_key(ec.SECP256R1()), SID)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
        for _ in range(min(n, 200))
    ]
    t0 = time.perf_counter()
    for i in range(n):
        v = parse_csr(csrs[i % len(csrs)], TD)
        issuer.sign(v.public_key, v.spiffe_id, now).chain_pem.decode()
    return n / (time.perf_counter() - t0)


async def _fire(bus: BusConnection, reqs: list[CertifyRequest], concurrency: int) -> float:
    subject = bus.subjects.ca("certify")
    queue = iter(reqs)
    errors: list[BaseException] = []

    async def worker() -> None:
        for req in queue:
            try:
                await rpc.request(bus, subject, req, CertifyResponse, timeout=30)
            except Exception as exc:
                errors.append(exc)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} certify requests failed, first: {errors[0]!r}")
    return len(reqs) / elapsed


async def over_the_bus(n: int, concurrency: int) -> dict[str, float]:
    server = EmbeddedNats(port=0)
    url = server.start()
    ca_dir = tempfile.mkdtemp(prefix="meshbus-bench-ca-")
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    if pin:
        os.sched_setaffinity(0, {0})
    ca = None
    try:
        async with BusConnection(BusSettings(url=url, root="bench")) as bus:
            ready = asyncio.Event()

            async def on_bundle(_msg: Msg) -> None:
                codec.decode(_msg.data, _msg.headers, TrustBundle)
                ready.set()

            await bus.subscribe(bus.subjects.ca_bundle_changed(), on_bundle)
            await bus.flush()
            ca = await asyncio.create_subprocess_exec(
                *pin, sys.executable, "-m", "meshbus.control.ca", "--nats", url, "--subject-root", "bench",
                "--ca-dir", ca_dir, "--log-level", "warning",
            )  # fmt: skip
            await asyncio.wait_for(ready.wait(), 30)
            token = await rpc.request(
                bus,
                bus.subjects.ca("token"),
                TokenCreateRequest("bench", "client", ttl_seconds=3600, max_uses=n + 100),
                TokenCreateReply,
            )
            keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]
            csrs = [make_csr(k, SID) for k in keys]
            pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in csrs]
            warm = [CertifyRequest(pems[i], token=token.token) for i in range(min(50, n))]
            await _fire(bus, warm, concurrency)
            token_rate = await _fire(bus, [CertifyRequest(p, token=token.token) for p in pems], concurrency)
            # one current certificate to renew from, then n renewals
            first = await rpc.request(
                bus, bus.subjects.ca("certify"), CertifyRequest(pems[0], token=token.token), CertifyResponse
            )
            renewals = [
                CertifyRequest(
                    pems[i], current_chain_pem=first.cert_chain_pem, proof=renewal_proof(keys[0], csrs[i])
                )
                for i in range(n)
            ]
            renew_rate = await _fire(bus, renewals, concurrency)
            return {"bus_token_per_s": token_rate, "bus_renewal_per_s": renew_rate}
    finally:
        if ca is not None and ca.returncode is None:
            ca.send_signal(signal.SIGTERM)
            await ca.wait()
        server.cleanup()
        shutil.rmtree(ca_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"in_process_per_s": in_process(args.n)}
    results.update(asyncio.run(over_the_bus(args.n, args.concurrency)))
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in results.items()}))
        return
    print(f"CSRs signed per second (n={args.n}, concurrency={args.concurrency}, target >= 500)")
    print(f"  in-process (parse + sign):          {results['in_process_per_s']:8.0f}/s")
    print(f"  one meshbus-ca process, token:      {results['bus_token_per_s']:8.0f}/s")
    print(f"  one meshbus-ca process, renewal:    {results['bus_renewal_per_s']:8.0f}/s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
