import asyncio

import pytest

from meshbus.bus import errors
from meshbus.bus.connection import backoff_delay


def test_messages_are_prefixed_once() -> None:
    assert str(errors.NotFoundError("x")) == "meshbus: x"
    assert str(errors.NotFoundError("meshbus: x")) == "meshbus: x"


def test_codes_round_trip_to_the_same_class() -> None:
    for cls in (
        errors.BadRequestError,
        errors.ConflictError,
        errors.NotReadyError,
        errors.RequestTimeoutError,
    ):
        rebuilt = errors.error_for_code(cls.code, "m")
        assert type(rebuilt) is cls


def test_unknown_code_stays_visible() -> None:
    err = errors.error_for_code("quota_exceeded", "m")
    assert isinstance(err, errors.BusError)
    assert err.code == "quota_exceeded"


def test_timeout_is_also_an_asyncio_timeout() -> None:
    assert isinstance(errors.RequestTimeoutError("t"), asyncio.TimeoutError)


def test_register_error_refuses_duplicate_codes() -> None:
    class Dup(errors.BusError):
        code = "conflict"

    with pytest.raises(ValueError, match="already used"):
        errors.register_error(Dup)


def test_backoff_is_jittered_and_capped() -> None:
    assert backoff_delay(0, 0.05, 2.0, 1.0) == pytest.approx(0.05)
    assert backoff_delay(3, 0.05, 2.0, 1.0) == pytest.approx(0.4)
    assert backoff_delay(30, 0.05, 2.0, 1.0) == pytest.approx(2.0)
    assert backoff_delay(30, 0.05, 2.0, 0.0) == 0.0
