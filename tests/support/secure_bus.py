"""A real nats-server secured as `meshctl up` secures it (`meshbus.control.cli.bus_auth`), and clients
that connect to it as each role, every one over TLS with a certificate: components, bootstrap and
proxies without identity by the client certificates `ensure_bus` wrote, proxies by their SVID.

`WatchedBus` records the permission violations the server reports (nats-py hands them to the error
callback and keeps the connection); `refused_publish` / `refused_subscribe` wait for that report and
then prove nothing was delivered (both sides flushed: a message the server had routed would have
arrived before the receiver's PONG). `delivered` is the positive control.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.subscription import Subscription

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.spiffe import SpiffeId
from meshbus.bus.subjects import inbox_prefix
from meshbus.control.ca.issuer import CaMaterial, Issuer, IssuerConfig
from meshbus.control.ca.material import load_or_create_root
from meshbus.control.cli import bus_auth
from tests.support.bounded import within
from tests.support.nats_server import require_binary

TD = "cluster.local"
ROOT = "mesh"


class WatchedBus(BusConnection):
    """A BusConnection that keeps every permission violation the server reports to it."""

    def __init__(self, settings: BusSettings) -> None:
        super().__init__(settings)
        self.violations: asyncio.Queue[str] = asyncio.Queue()

    async def _on_error(self, exc: Exception) -> None:
        await super()._on_error(exc)
        if "permissions violation" in str(exc).lower():
            self.violations.put_nowait(str(exc))

    async def next_violation(self, subject: str) -> str:
        """The next violation the server reported about ``subject`` (others are skipped)."""

        async def matching() -> str:
            while True:
                violation = await self.violations.get()
                if f'"{subject.lower()}"' in violation.lower():
                    return violation

        return await within(f"the server's permissions violation on {subject}", matching(), 5.0)


@dataclass
class SecureBus:
    """A secured server's URL, its credentials (`bus_auth.BusFiles`) and the mesh root that signs
    certificates (None for a mesh `meshctl up` runs: its sidecars' own certificates are used then)."""

    url: str
    files: bus_auth.BusFiles
    material: CaMaterial | None
    workdir: Path
    server: EmbeddedNats | None = None
    opened: list[BusConnection] = field(default_factory=list)
    _kept: dict[str, WatchedBus] = field(default_factory=dict)

    def settings(self, name: str, **kw: object) -> BusSettings:
        return dataclasses.replace(
            BusSettings(url=self.url, name=name, root=ROOT, user=None, password=None), **kw
        )  # type: ignore[arg-type]

    async def _open(self, settings: BusSettings) -> WatchedBus:
        bus = WatchedBus(settings)
        await within(f"{settings.name} to connect", bus.connect(wait=False), 10.0)
        self.opened.append(bus)
        return bus

    def client_tls(self, principal: str) -> dict[str, str]:
        """BusSettings fields that present ``principal``'s client certificate (a role, ``bootstrap``,
        ``proxy-<node>``)."""
        files = self.files
        return {
            "tls_cert": str(files.cert(principal)),
            "tls_key": str(files.key(principal)),
            "tls_ca": str(files.server_ca),
        }

    async def as_role(self, role: str) -> WatchedBus:
        """A component (or the operator, or a proxy without identity) with its client certificate."""
        return await self._open(
            self.settings(role, inbox_prefix=inbox_prefix("role", role), **self.client_tls(role))
        )

    async def as_bootstrap(self, node: str) -> WatchedBus:
        return await self._open(
            self.settings(
                f"bootstrap {node}",
                inbox_prefix=inbox_prefix("bootstrap", node),
                **self.client_tls(bus_auth.BOOTSTRAP),
            )
        )

    def certificate(self, ns: str, sa: str) -> Path:
        """An SVID for ``spiffe://cluster.local/ns/<ns>/sa/<sa>`` as a proxy keeps it (key + chain, one file)."""
        if self.material is None:
            raise ValueError("no CA key here: use a sidecar's own certificate (as_proxy(identity_file=...))")
        key = ec.generate_private_key(ec.SECP256R1())
        issued = Issuer(self.material, IssuerConfig(trust_domain=TD)).sign(
            key.public_key(), SpiffeId.workload(TD, ns, sa), dt.datetime.now(dt.UTC)
        )
        path = self.workdir / f"{ns}-{sa}-{len(self.opened)}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            + issued.chain_pem
        )
        path.chmod(0o600)
        return path

    def tls_context(self, identity_file: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.files.server_ca))
        ctx.load_cert_chain(str(identity_file))
        return ctx

    async def as_proxy(
        self, node: str, ns: str = "default", sa: str = "reviews", *, identity_file: Path | None = None
    ) -> WatchedBus:
        """A proxy with its certificate: mapped by its URI SAN (no nkey, no password)."""
        ctx = self.tls_context(identity_file or self.certificate(ns, sa))
        return await self._open(
            self.settings(f"proxy {node}", ssl_context=ctx, inbox_prefix=inbox_prefix("node", node))
        )

    async def role(self, role: str) -> WatchedBus:
        """One connection per role, kept until `close` (a TLS handshake each: sharing them keeps a module
        of tests quick)."""
        if role not in self._kept:
            self._kept[role] = await self.as_role(role)
        return self._kept[role]

    async def proxy(self, node: str, sa: str = "reviews") -> WatchedBus:
        key = f"proxy {node}"
        if key not in self._kept:
            self._kept[key] = await self.as_proxy(node, sa=sa)
        return self._kept[key]

    async def close(self) -> None:
        self._kept.clear()
        for bus in self.opened:
            await within(f"{bus.settings.name} to close", bus.close(drain=False))
        self.opened.clear()


def start_secure_bus(workdir: Path, proxies: list[bus_auth.ProxyPrincipal]) -> SecureBus:
    require_binary()
    material, _ = load_or_create_root(workdir / "ca", TD, None, dt.datetime.now(dt.UTC))
    files = bus_auth.ensure_bus(
        workdir / bus_auth.BUS_DIR, material, root=ROOT, proxies=proxies, trust_domain=TD
    )
    server = EmbeddedNats(port=0, extra_args=bus_auth.server_args(files))
    server.start()
    return SecureBus(server.url, files, material, workdir, server)


# -- assertions -----------------------------------------------------------------------------------


async def _collect(bus: BusConnection, subject: str) -> Subscription:
    """A subscription without callback: a message the server delivers is in its queue as soon as it is
    read, so once a later PONG is read (a flush returns) the queue holds everything sent before."""
    sub = await bus.nc.subscribe(subject)
    await bus.flush()
    return sub


async def delivered(sender: BusConnection, subject: str, receiver: BusConnection) -> bool:
    """Publish as ``sender``; whether ``receiver`` (subscribed first) got it."""
    sub = await _collect(receiver, subject)
    await sender.nc.publish(subject, b"probe")
    await sender.flush()
    await receiver.flush()
    return sub.pending_msgs > 0


async def refused_publish(sender: WatchedBus, subject: str, receiver: BusConnection) -> str:
    """Publish as ``sender`` a message ``receiver`` would get; the server's refusal, nothing delivered."""
    sub = await _collect(receiver, subject)
    await sender.nc.publish(subject, b"forged")
    violation = await sender.next_violation(subject)
    await sender.flush()
    await receiver.flush()
    assert sub.pending_msgs == 0, (
        f"{subject} reached the receiver although {sender.settings.name} may not publish there"
    )
    assert "publish" in violation.lower(), violation
    return violation


async def refused_subscribe(who: WatchedBus, subject: str, publisher: BusConnection) -> str:
    """Subscribe as ``who``; the server's refusal, and a message published there never reaches it."""
    sub = await _collect(who, subject)
    violation = await who.next_violation(subject)
    await publisher.nc.publish(subject, b"secret")
    await publisher.flush()
    await who.flush()
    assert sub.pending_msgs == 0, f"{who.settings.name} read {subject}"
    assert "subscription" in violation.lower(), violation
    return violation
