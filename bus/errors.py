"""Errors of the bus layer, each with a stable wire code.

Domain code raises these; `service.py` maps any of them to the one error envelope
(`ErrorReply{code, message}`) and `rpc.py` maps an envelope back to the same class,
so a caller catches `NotReadyError` whether it was raised locally or three hops away.
"""

from __future__ import annotations


class BusError(Exception):
    """Root of every meshbus bus error. `code` is stable and travels on the wire."""

    code = "internal"

    def __init__(self, message: str) -> None:
        if not message.startswith("meshbus: "):
            message = "meshbus: " + message
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)


class BadRequestError(BusError):
    """The request could not be decoded or failed validation."""

    code = "bad_request"


class PayloadTooLargeError(BadRequestError):
    code = "payload_too_large"


class UnknownSchemaError(BadRequestError):
    """The message names a schema (or a schema version) this process does not know."""

    code = "unknown_schema"


class NotFoundError(BusError):
    code = "not_found"


class ConflictError(BusError):
    """An optimistic-concurrency check failed (stale revision)."""

    code = "conflict"


class NotReadyError(BusError):
    """The component is up but has not synced the state it needs to answer."""

    code = "not_ready"


class PermissionDeniedError(BusError):
    code = "permission_denied"


class SignatureError(PermissionDeniedError):
    """A message that must be signed is not, or its signature does not verify with a trusted key."""

    code = "bad_signature"


class UnavailableError(BusError):
    """Nobody answered: no responders, or the bus is disconnected."""

    code = "unavailable"


class RequestTimeoutError(BusError, TimeoutError):
    """No reply before the deadline. Also a TimeoutError (== asyncio.TimeoutError since 3.11), as in nats-py."""

    code = "timeout"


class InternalError(BusError):
    code = "internal"


class EmbeddedServerError(BusError):
    """The embedded nats-server could not be found or started."""

    code = "embedded_server"


_BY_CODE: dict[str, type[BusError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        PayloadTooLargeError,
        UnknownSchemaError,
        NotFoundError,
        ConflictError,
        NotReadyError,
        PermissionDeniedError,
        SignatureError,
        UnavailableError,
        RequestTimeoutError,
        InternalError,
    )
}


def error_for_code(code: str, message: str) -> BusError:
    """Rebuild the typed error a remote handler raised from its wire code."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = BusError(message)
        err.code = code  # keep unknown codes visible rather than collapsing them
        return err
    return cls(message)


def register_error(cls: type[BusError]) -> type[BusError]:
    """Let a later component add its own error class (code must be unique)."""
    existing = _BY_CODE.get(cls.code)
    if existing is not None and existing is not cls:
        raise ValueError(f"meshbus: error code {cls.code!r} already used by {existing.__name__}")
    _BY_CODE[cls.code] = cls
    return cls
