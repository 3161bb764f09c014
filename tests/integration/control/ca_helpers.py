"""Shared pieces of the CA integration tests: a CA replica on the test bus, CSRs, token minting."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cryptography.hazmat.primitives.asymmetric import ec

from meshbus.bus import BusConnection, BusSettings, rpc
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas import Health, HealthRequest
from meshbus.bus.schemas.identity import CertifyRequest, CertifyResponse, TokenCreateReply, TokenCreateRequest
from meshbus.bus.spiffe import SpiffeId
from meshbus.control.ca.issuer import CaMaterial, Issuer, IssuerConfig
from meshbus.control.ca.service import CaService, CaServiceConfig
from tests.unit.control.ca.pki import TD, csr_pem

WEB = SpiffeId.workload(TD, "default", "web")
DB = SpiffeId.workload(TD, "default", "db")


class Clock:
    """Settable wall clock for token expiry (the CA never sleeps on it)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def ca_replica(
    url: str,
    root: str,
    material: CaMaterial,
    *,
    clock: Clock | None = None,
    config: CaServiceConfig | None = None,
    ttl: dt.timedelta = dt.timedelta(hours=24),
    probe: BusConnection | None = None,
) -> AsyncIterator[CaService]:
    """One meshbus-ca replica with its own NATS connection (as a separate process would have).

    With ``probe``, waits until that connection gets an answer from the replica: right after a
    queue subscription is flushed, nats-server (2.12) may still answer a first request from
    another connection with "no responders" now and then (about 1 in 100 here).
    """
    async with BusConnection(BusSettings(url=url, name="ca", root=root)) as conn:
        issuer = Issuer(material, IssuerConfig(trust_domain=TD, workload_ttl=ttl))
        kwargs = {"clock": clock} if clock is not None else {}
        async with CaService(conn, issuer, config, **kwargs) as ca:
            if probe is not None:
                await wait_answering(probe)
            yield ca


async def wait_answering(bus: BusConnection, attempts: int = 50) -> None:
    for attempt in range(attempts):
        try:
            await rpc.request(bus, bus.subjects.endpoint("ca", "health"), HealthRequest(), Health, timeout=2)
            return
        except UnavailableError:
            if attempt == attempts - 1:
                raise


async def create_token(
    bus: BusConnection, ns: str = "default", sa: str = "web", *, uses: int = 1, ttl: int = 3600
) -> str:
    reply = await rpc.request(
        bus,
        bus.subjects.ca("token"),
        TokenCreateRequest(ns, sa, ttl_seconds=ttl, max_uses=uses),
        TokenCreateReply,
    )
    return reply.token


async def certify_with_token(
    bus: BusConnection, token: str, sid: SpiffeId = WEB, *, ttl_seconds: int = 0
) -> tuple[ec.EllipticCurvePrivateKey, CertifyResponse]:
    key = ec.generate_private_key(ec.SECP256R1())
    req = CertifyRequest(csr_pem=csr_pem(key, sid), token=token, ttl_seconds=ttl_seconds, node="test")
    return key, await rpc.request(bus, bus.subjects.ca("certify"), req, CertifyResponse)
