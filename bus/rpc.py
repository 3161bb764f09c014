"""Typed request/reply over the bus with a deadline.

`request(bus, subject, msg, ReplyType)` encodes `msg`, waits at most `timeout`, and
returns a `ReplyType` — or raises the typed `BusError` the remote handler raised (its
code travels in the `ErrorReply` envelope), `UnavailableError` when nobody serves the
subject, `RequestTimeoutError` when the deadline passes; ``verify`` (a signature check) sees the
reply's bytes and headers before they are decoded. With ``wait_for_service`` a subject
nobody serves yet, or whose service answers ``not_ready`` (still syncing), is asked again until the
deadline (an operator command run while the service starts, as the compose stack's bootstrap step
is); otherwise "no responders" is final at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import nats.errors

from . import codec
from .connection import BusConnection
from .errors import BusError, PermissionDeniedError, RequestTimeoutError, UnavailableError, error_for_code
from .schemas.common import ErrorReply

T = TypeVar("T")

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


async def request(
    bus: BusConnection,
    subject: str,
    msg: Any,
    reply_type: type[T],
    *,
    timeout: float = 2.0,
    wait_for_service: bool = False,
    verify: Callable[[bytes, dict[str, str]], object] | None = None,
) -> T:
    data, headers = codec.encode(msg)
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            reply = await bus.nc.request(subject, data, timeout=timeout, headers=headers)
            if (
                not (wait_for_service and _not_ready(reply.data, reply.headers))
                or deadline - time.monotonic() <= pause
            ):
                break
            await asyncio.sleep(pause)  # it answers, but is still syncing: the same wait as no responders
            pause = min(pause * 2, 0.5)
            timeout = max(deadline - time.monotonic(), 0.01)
        except nats.errors.NoRespondersError:
            left = deadline - time.monotonic()
            if not wait_for_service or left <= pause:
                raise UnavailableError(f"no responders on {subject}") from None
            await asyncio.sleep(pause)  # nothing to await: a service subscribing sends no event
            pause = min(pause * 2, 0.5)
            timeout = max(deadline - time.monotonic(), 0.01)
        except (nats.errors.TimeoutError, TimeoutError):
            refused = bus.denied.get(subject.lower())
            if refused:  # the server said why nothing came back: this connection may not ask that
                raise PermissionDeniedError(f"NATS refused the request on {subject} ({refused})") from None
            raise RequestTimeoutError(f"no reply on {subject} within {timeout:.3g}s") from None
        except nats.errors.ConnectionClosedError:
            raise UnavailableError(f"bus connection closed while requesting {subject}") from None
    rheaders = reply.headers or {}
    if ERROR_CODE_HEADER in rheaders:
        raise _error_from_reply(reply.data, rheaders)
    if verify is not None:
        verify(reply.data, rheaders)  # raises: a reply that must be signed and is not never decodes
    return codec.decode(reply.data, rheaders, reply_type, max_bytes=bus.settings.max_payload)


def _not_ready(data: bytes, headers: dict[str, str] | None) -> bool:
    if not headers or ERROR_CODE_HEADER not in headers:
        return False
    return _error_from_reply(data, headers).code == "not_ready"


def _error_from_reply(data: bytes, headers: dict[str, str]) -> BusError:
    try:
        env = codec.decode(data, headers, ErrorReply)
        return error_for_code(env.code, env.message)
    except BusError:
        # A non-meshbus micro service answered with only the standard headers.
        return error_for_code("internal", headers.get(ERROR_HEADER, "remote error"))
