from __future__ import annotations

import pytest

from meshbus.bus.config.virtual_service import HTTPRetry, HTTPRetryBackoff
from meshbus.proxy.core.retry import DEFAULT_RETRY, NO_RETRY, parse_retry_on, retry_policy_from

pytestmark = pytest.mark.unit


def test_istio_default_policy_when_unset() -> None:
    p = retry_policy_from(None)
    assert p is DEFAULT_RETRY
    assert p.attempts == 2
    assert p.retry_on == {
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    }
    # Istio's DefaultPolicy also retries 503 (RetriableStatusCodes: [503]).
    assert p.retry_on_status(503)
    assert not p.retry_on_status(500) and not p.retry_on_status(502) and not p.retry_on_status(504)
    assert p.retry_on_error("connect-failure") and p.retry_on_error("refused-stream")
    assert not p.retry_on_error("reset") and not p.retry_on_error("timeout")
    assert p.retry_on_grpc(14) and p.retry_on_grpc(1) and not p.retry_on_grpc(13)


def test_attempts_zero_disables() -> None:
    p = retry_policy_from(HTTPRetry(attempts=0, retry_on="5xx"))
    assert p is NO_RETRY
    assert not p.retry_on_status(503) and not p.retry_on_error("connect-failure")


def test_attempts_without_retry_on_keeps_default_conditions() -> None:
    p = retry_policy_from(HTTPRetry(attempts=5))
    assert p.attempts == 5 and p.retry_on == DEFAULT_RETRY.retry_on and p.retry_on_status(503)


def test_5xx_covers_all_5xx_and_errors() -> None:
    p = retry_policy_from(HTTPRetry(attempts=1, retry_on="5xx"))
    for code in (500, 501, 502, 503, 504, 599):
        assert p.retry_on_status(code)
    assert not p.retry_on_status(404)
    for kind in ("connect-failure", "refused-stream", "reset", "timeout"):
        assert p.retry_on_error(kind)


def test_gateway_error_only_502_503_504() -> None:
    p = retry_policy_from(HTTPRetry(attempts=1, retry_on="gateway-error"))
    assert [c for c in range(500, 506) if p.retry_on_status(c)] == [502, 503, 504]
    assert p.retry_on_error("reset")  # a reset becomes a 5xx the router would answer


def test_connect_failure_only() -> None:
    p = retry_policy_from(HTTPRetry(attempts=1, retry_on="connect-failure"))
    assert p.retry_on_error("connect-failure")
    assert not p.retry_on_error("reset") and not p.retry_on_status(503)


def test_bare_codes_mean_retriable_status_codes_and_replace_default_503() -> None:
    policies, codes = parse_retry_on("reset, 429,503 ,,connect-failure")
    assert policies == {"reset", "connect-failure", "retriable-status-codes"}
    assert codes == {429, 503}
    assert parse_retry_on("5xx,²,٣") == ({"5xx", "²", "٣"}, frozenset())  # digits, not ASCII ones
    p = retry_policy_from(HTTPRetry(attempts=2, retry_on="reset"))
    assert not p.retry_on_status(503)  # a user retryOn replaces the default list and its 503
    p2 = retry_policy_from(HTTPRetry(attempts=2, retry_on="429"))
    assert p2.retry_on_status(429) and not p2.retry_on_status(503)


def test_retriable_4xx_is_409_only() -> None:
    p = retry_policy_from(HTTPRetry(attempts=1, retry_on="retriable-4xx"))
    assert p.retry_on_status(409) and not p.retry_on_status(400) and not p.retry_on_status(429)


def test_per_try_timeout() -> None:
    assert retry_policy_from(HTTPRetry(attempts=1, per_try_timeout="250ms")).per_try_timeout == 0.25
    assert retry_policy_from(HTTPRetry(attempts=1)).per_try_timeout is None


def test_backoff_full_jitter_base_25ms_cap_250ms() -> None:
    p = DEFAULT_RETRY
    assert p.backoff(1, 0.0) == 0.0
    assert p.backoff(1, 0.999999) == pytest.approx(0.025, abs=1e-6)
    assert p.backoff(2, 0.999999) == pytest.approx(0.075, abs=1e-6)
    assert p.backoff(3, 0.5) == pytest.approx(0.0875)
    assert p.backoff(10, 0.999999) == pytest.approx(0.25, abs=1e-6)  # capped at 10x base
    assert p.backoff(50, 0.5) == pytest.approx(0.125)


def test_backoff_base_interval_from_config() -> None:
    p = retry_policy_from(HTTPRetry(attempts=3, backoff=HTTPRetryBackoff(base_interval="100ms")))
    assert p.backoff(1, 0.999999) == pytest.approx(0.1, abs=1e-5)
    assert p.backoff(9, 0.999999) == pytest.approx(1.0, abs=1e-5)
