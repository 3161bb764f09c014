"""How every meshctl command reaches the bus: a bounded connect, bounded requests, one error.

nats-py retries a refused first connect forever unless told otherwise, so a command run while the
mesh is down would never return. Here the connection is one-shot (`BusSettings.reconnect` False),
connecting is bounded by the command's ``--timeout`` (at most `CONNECT_TIMEOUT`), each request by
``--timeout`` too, and failing to reach NATS is always the same `UnavailableError`:
``cannot reach NATS at URL: <why> (is the mesh up? try --nats URL)``. On a secured bus a command
authenticates as the operator: ``--nats-cert``/``--nats-key`` (``$MESHBUS_NATS_CERT``/``$MESHBUS_NATS_KEY``),
else the certificate `meshctl up` wrote in ``$MESHBUS_DATA_DIR/bus/operator-cert.pem`` (default
``.meshbus``), checking the server against ``--nats-ca`` or that mesh's root; ``--nats-nkey`` for a NATS
meshbus does not configure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import PermissionDeniedError, UnavailableError
from meshbus.bus.process import settings_from_args

from .bus_auth import OPERATOR_CERT_HINT, operator_credentials
from .up_background import default_data_dir

T = TypeVar("T")
CONNECT_TIMEOUT = 3.0
"""Longest wait for NATS itself: a server that is up answers in milliseconds."""


def timeout_args(default: float, what: str) -> argparse.ArgumentParser:
    """A parent parser with ``--timeout`` (seconds to wait for ``what``; also bounds connecting)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--timeout",
        type=float,
        default=default,
        help=f"seconds to wait for {what} (default {default:g}); connecting to NATS waits at most "
        f"this long too, and never more than {CONNECT_TIMEOUT:g}",
    )
    return parser


async def open_bus(args: argparse.Namespace) -> BusConnection:
    """A connected one-shot BusConnection, or UnavailableError within ``min(--timeout, CONNECT_TIMEOUT)``."""
    bound = max(0.001, min(args.timeout, CONNECT_TIMEOUT))
    settings = dataclasses.replace(
        settings_from_args(args, "meshctl", role="operator"), reconnect=False, connect_timeout=bound
    )
    kept = operator_credentials(default_data_dir())
    if kept is not None and settings.nkey_seed_file is None and settings.tls_cert is None:
        # what `meshctl up` wrote: the operator's credentials, on the machine the mesh runs on
        settings = dataclasses.replace(settings, tls_cert=kept[0], tls_key=kept[1])
    if kept is not None and settings.tls_cert is not None and settings.tls_ca is None:
        settings = dataclasses.replace(settings, tls_ca=kept[2])  # that mesh's root checks its server
    bus = BusConnection(settings)
    try:
        await asyncio.wait_for(bus.connect(wait=False), bound)
    except (TimeoutError, UnavailableError):
        await bus.close(drain=False)
        err = bus.last_error
        why = str(err) if err and str(err) else f"no answer within {bound:g}s"
        wanted = (
            "meshctl needs the operator's certificate (--nats-cert FILE --nats-key FILE --nats-ca FILE, or "
            f"the {OPERATOR_CERT_HINT} that meshctl up wrote)"
        )
        if "authorization violation" in why.lower():
            raise PermissionDeniedError(
                f"NATS at {settings.url} refused meshctl's credentials ({why}): {wanted}"
            ) from None
        # A secured bus is TLS only with a certificate of its mesh root. Refused in the handshake, the
        # client sees an SSL error, or (TLS 1.3: the client finishes first) the server hanging up.
        hung_up = isinstance(err, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError))
        if isinstance(err, ssl.SSLError) or (hung_up and (settings.tls_ca or settings.ssl_context)):
            raise PermissionDeniedError(
                f"the TLS handshake with NATS at {settings.url} failed ({why}): {wanted}"
            ) from None
        raise UnavailableError(
            f"cannot reach NATS at {settings.url}: {why} (is the mesh up? try --nats URL)"
        ) from None
    return bus


def call(args: argparse.Namespace, fn: Callable[[BusConnection], Awaitable[T]]) -> T:
    """Run ``fn(bus)`` on a fresh connection (`open_bus`) and close it; ``fn`` bounds its requests."""

    async def go() -> T:
        bus = await open_bus(args)
        try:
            return await fn(bus)
        finally:
            # Nothing is left to drain once the replies are in; a drain would wait on a dead server.
            await bus.close(drain=False)

    return asyncio.run(go())
