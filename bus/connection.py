"""BusConnection: the one way meshbus processes talk to NATS.

Connect with a client name, credentials (a client certificate over TLS, creds file or nkey
seed) and TLS; reconnect
forever with jittered exponential backoff; log a disconnect and a reconnect once each
(not a line per retry: the retries are counted instead). Request/reply goes through
`meshbus.bus.rpc`, which maps wire errors to typed exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import codec
from .errors import UnavailableError
from .subjects import DEFAULT_ROOT, Subjects

log = logging.getLogger(__name__)

ENV_URL = "MESHBUS_NATS_URL"
ENV_USER = "MESHBUS_NATS_USER"
ENV_PASSWORD = "MESHBUS_NATS_PASSWORD"
ENV_NKEY = "MESHBUS_NATS_NKEY"
"""Path of the nkey seed file this process authenticates with (a NATS meshbus does not configure;
`meshctl up` hands out client certificates instead: `ENV_CERT`)."""
ENV_CA = "MESHBUS_NATS_CA"
"""Path of the CA certificate(s) the nats-server's TLS certificate is checked against."""
ENV_CERT = "MESHBUS_NATS_CERT"
"""Path of the client certificate (PEM chain) this process presents over TLS (`meshctl up` writes one
per role; a secured bus maps its URI SAN to the role's user)."""
ENV_KEY = "MESHBUS_NATS_KEY"
"""Path of that certificate's private key."""
DEFAULT_URL = "nats://127.0.0.1:4222"
NEVER_CONNECTED_CLOSE = 0.2
"""Seconds `BusConnection.close` gives a client that never connected (nothing to flush)."""


class _UpgradedStreamEof(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl": nats-py reads
    the server's INFO in plain text, then upgrades the stream with ``loop.start_tls``, so the stream's
    protocol still believes it is not over TLS and answers a peer's close that way. Harmless (the
    connection closes as it should), but asyncio warns at every close of a TLS connection, onto
    meshctl's stderr among others."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("returning true from eof_received()")


logging.getLogger("asyncio").addFilter(_UpgradedStreamEof())

# nats-py reports the server's -ERR in lower case: 'nats: permissions violation for publish to "x"'
_DENIED_RE = re.compile(r'permissions violation for (?:publish|subscription) to "([^"]+)"', re.IGNORECASE)


def default_url() -> str:
    return os.environ.get(ENV_URL) or DEFAULT_URL


@dataclass(frozen=True, slots=True)
class BusSettings:
    """How to reach the bus. Frozen: built once by a process's __main__."""

    url: str = field(default_factory=default_url)
    name: str = "meshbus"
    root: str = DEFAULT_ROOT
    credentials_file: str | None = None
    user: str | None = field(default_factory=lambda: os.environ.get(ENV_USER) or None)
    """User and password for a server that asks for them (from the environment, as docker-compose's
    env file gives them: a URL with the password in it would end up in logs)."""
    password: str | None = field(default_factory=lambda: os.environ.get(ENV_PASSWORD) or None, repr=False)
    nkey_seed_file: str | None = field(default_factory=lambda: os.environ.get(ENV_NKEY) or None)
    tls_ca: str | None = field(default_factory=lambda: os.environ.get(ENV_CA) or None)
    tls_cert: str | None = field(default_factory=lambda: os.environ.get(ENV_CERT) or None)
    tls_key: str | None = field(default_factory=lambda: os.environ.get(ENV_KEY) or None)
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    """A ready TLS client context (wins over tls_ca/tls_cert): a proxy's, built from its SVID and
    reloaded in place when the certificate is renewed, so a reconnect presents the new one."""
    tls_first: bool = False
    """Start TLS before the server's INFO (nats-py ``tls_handshake_first``), for a server configured
    with ``handshake_first``; meshbus's own secured bus (`meshbus.control.cli.bus_auth`) is not: a
    client reads its INFO, which requires TLS, then upgrades."""
    inbox_prefix: str | None = None
    """Where replies to this process's requests arrive (`meshbus.bus.subjects.inbox_prefix`): a NATS
    user is allowed to read its own inboxes only. None: nats-py's ``_INBOX``."""
    connect_timeout: float = 2.0
    reconnect: bool = True
    """False for a one-shot client (meshctl): one connect attempt per server, nothing retried in the
    background, errors left to the caller instead of logged; a component process keeps True."""
    reconnect_base: float = 0.05
    reconnect_max: float = 2.0
    max_payload: int = codec.DEFAULT_MAX_BYTES

    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]


@dataclass
class BusStats:
    disconnects: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    async_errors: int = 0


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rand * min(cap, base * (2 ** min(attempt, 16)))


class BusConnection:
    """Async context manager over a nats-py client.

    ``async with BusConnection(settings) as bus:`` connects (retrying until the server
    answers when ``wait=True``), and drains on exit so in-flight replies are sent.
    """

    def __init__(self, settings: BusSettings | None = None, *, logger: logging.Logger | None = None) -> None:
        self.settings = settings or BusSettings()
        self.subjects = Subjects(self.settings.root)
        self.stats = BusStats()
        self.nc: Client = Client()
        self._log = logger or log
        self._connected = asyncio.Event()
        self._was_disconnected = False
        self._closed = False
        self.last_error: Exception | None = None
        """The last error nats-py reported (why a connect failed)."""
        self.denied: dict[str, str] = {}
        """Subjects the server refused this connection (publish or subscribe) -> its words, so a request
        that times out because its subject is not allowed says so (`meshbus.bus.rpc`)."""

    # -- lifecycle
    async def connect(self, *, wait: bool = True) -> None:
        """Connect. With wait=True keep retrying (jittered) until the first connect succeeds."""
        attempt = 0
        while True:
            try:
                await self.nc.connect(**self._options())
                break
            except Exception as exc:
                if not wait:
                    raise UnavailableError(f"cannot connect to NATS at {self.settings.url}: {exc}") from exc
                if attempt == 0:
                    self._log.warning("NATS at %s not reachable (%s); retrying", self.settings.url, exc)
                self.stats.reconnect_attempts += 1
                await asyncio.sleep(
                    backoff_delay(
                        attempt, self.settings.reconnect_base, self.settings.reconnect_max, random.random()
                    )
                )
                attempt += 1
                self.nc = Client()
        self._connected.set()
        self._log.info(
            "connected to NATS at %s as %s",
            self.nc.connected_url.netloc if self.nc.connected_url else "?",
            self.settings.name,
        )

    def _options(self) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = dict(
            servers=s.servers(),
            name=s.name,
            connect_timeout=s.connect_timeout,
            allow_reconnect=s.reconnect,
            # nats-py's initial connect loops over the server pool until a server exceeds this
            # count; -1 never gives up (even with allow_reconnect=False), so a one-shot client says 1.
            max_reconnect_attempts=-1 if s.reconnect else 1,
            reconnect_to_server_handler=self._pick_server,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        if not s.reconnect:
            opts["reconnect_time_wait"] = 0.0  # its second (last) attempt follows the first at once
        if s.user:
            opts["user"], opts["password"] = s.user, s.password or ""
        if s.credentials_file:
            opts["user_credentials"] = s.credentials_file
        if s.nkey_seed_file:
            opts["nkeys_seed"] = s.nkey_seed_file
        if s.inbox_prefix:
            opts["inbox_prefix"] = s.inbox_prefix
        if s.ssl_context is not None:
            opts["tls"] = s.ssl_context
        elif s.tls_ca or s.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=s.tls_ca)
            if s.tls_cert:
                ctx.load_cert_chain(s.tls_cert, s.tls_key)
            opts["tls"] = ctx
        if "tls" in opts and s.tls_first:
            opts["tls_handshake_first"] = True
        return opts

    def _pick_server(self, servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        # nats-py's own wait is a fixed reconnect_time_wait; jitter spreads a fleet of
        # proxies so a restarted server is not hit by all of them in the same instant.
        server = min(servers, key=lambda s: s.reconnects)
        self.stats.reconnect_attempts += 1
        delay = backoff_delay(
            server.reconnects, self.settings.reconnect_base, self.settings.reconnect_max, random.random()
        )
        return server, delay

    async def _on_error(self, exc: Exception) -> None:
        self.stats.async_errors += 1
        self.last_error = exc
        denied = _DENIED_RE.search(str(exc))
        if denied:
            self.denied[denied.group(1)] = str(exc)
        if self._was_disconnected or not self.settings.reconnect:
            self._log.debug("NATS error while reconnecting: %s", exc)  # counted, not logged per retry
        else:
            self._log.warning("NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._closed or self._was_disconnected:
            return
        self._was_disconnected = True
        self._connected.clear()
        self.stats.disconnects += 1
        self._log.warning("disconnected from NATS; reconnecting in the background")

    async def _on_reconnected(self) -> None:
        self._was_disconnected = False
        self._connected.set()
        self.stats.reconnects += 1
        url = self.nc.connected_url.netloc if self.nc.connected_url else "?"
        self._log.info("reconnected to NATS at %s after %d attempts", url, self.stats.reconnect_attempts)

    async def _on_closed(self) -> None:
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def close(self, *, drain: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if self.nc.is_closed:
            return
        try:
            if drain and self.nc.is_connected:
                await self.nc.drain()
            elif self._connected.is_set() or self._was_disconnected:
                await self.nc.close()
            else:
                # Never connected: a connect refused in the TLS handshake leaves nats-py's close waiting
                # forever on the stream the handshake took over (asyncio's start_tls closed it under
                # it), and nothing was ever open to flush.
                await asyncio.wait_for(self.nc.close(), NEVER_CONNECTED_CLOSE)
        except Exception as exc:  # closing must never raise into shutdown paths
            self._log.debug("error while closing NATS connection: %r", exc)

    async def __aenter__(self) -> BusConnection:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- messaging
    async def publish(self, subject: str, msg: Any) -> None:
        data, headers = codec.encode(msg)
        await self.nc.publish(subject, data, headers=headers)

    async def subscribe(
        self, subject: str, cb: Callable[[Msg], Awaitable[None]], *, queue: str = ""
    ) -> Subscription:
        return await self.nc.subscribe(subject, queue=queue, cb=cb)

    async def flush(self, timeout: float = 2.0) -> None:
        """Return once the server has processed everything this connection sent before the call.

        Two PING round trips, not one: nats-py writes flush's PING straight to the socket while the
        SUB/PUB commands before it may still wait in its pending buffer for the flusher task, so the
        first PONG can come back before they reach the server (a subscription then misses a message
        published right after "it is registered"). By the first PONG the flusher has written them,
        so the second PING follows them on the wire."""
        for _ in range(2):
            await self.nc.flush(timeout=timeout)  # type: ignore[arg-type]  # nats-py annotates int, accepts float
