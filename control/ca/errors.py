"""Errors of meshbus-ca. Wire-facing ones are `BusError`s with their own stable codes."""

from __future__ import annotations

from meshbus.bus.errors import BadRequestError, BusError, PermissionDeniedError, register_error


class CaConfigError(BusError):
    """The CA material or flags are unusable (raised at start-up, reported by __main__)."""

    code = "ca_config"


class InvalidCsrError(BadRequestError):
    """The CSR is malformed, badly signed, or asks for an identity the CA will not issue."""

    code = "invalid_csr"


class TokenInvalidError(PermissionDeniedError):
    """Unknown or malformed token, or its secret does not match."""

    code = "token_invalid"


class TokenExpiredError(PermissionDeniedError):
    code = "token_expired"


class TokenExhaustedError(PermissionDeniedError):
    """The token was already used as many times as it allows."""

    code = "token_exhausted"


class IdentityMismatchError(PermissionDeniedError):
    """The CSR asks for another SPIFFE ID than the token (or the current certificate) is bound to."""

    code = "identity_mismatch"


class RenewalRefusedError(PermissionDeniedError):
    """A renewal's current certificate or proof does not check out."""

    code = "renewal_refused"


for _cls in (
    InvalidCsrError,
    TokenInvalidError,
    TokenExpiredError,
    TokenExhaustedError,
    IdentityMismatchError,
    RenewalRefusedError,
):
    register_error(_cls)
