from __future__ import annotations

import pytest

from meshbus.bus.config.types import Percent
from meshbus.bus.config.virtual_service import FaultAbort, FaultDelay, HTTPFaultInjection
from meshbus.proxy.filters.fault import FaultPolicy, fault_policy_from

pytestmark = pytest.mark.unit


def test_delay_percentage() -> None:
    f = fault_policy_from(
        HTTPFaultInjection(delay=FaultDelay(fixed_delay="2s", percentage=Percent(value=30)))
    )
    assert f is not None
    assert f.decide(0.29, 0.0) == (2.0, None)
    assert f.decide(0.30, 0.0) == (None, None)


def test_abort_percentage_and_both() -> None:
    f = fault_policy_from(
        HTTPFaultInjection(
            delay=FaultDelay(fixed_delay="1s", percentage=Percent(value=100)),
            abort=FaultAbort(http_status=503, percentage=Percent(value=50)),
        )
    )
    assert f is not None
    assert f.decide(0.0, 0.49) == (1.0, 503)
    assert f.decide(0.0, 0.5) == (1.0, None)


def test_without_percentage_nothing_is_injected() -> None:
    # Envoy's FractionalPercent defaults to 0 when Istio leaves percentage unset.
    f = fault_policy_from(HTTPFaultInjection(abort=FaultAbort(http_status=500)))
    assert f is not None
    assert all(f.decide(r / 10, r / 10) == (None, None) for r in range(10))


def test_deprecated_int_percent() -> None:
    f = fault_policy_from(HTTPFaultInjection(delay=FaultDelay(fixed_delay="500ms", percent=50)))
    assert f is not None and f.decide(0.4, 0) == (0.5, None) and f.decide(0.6, 0) == (None, None)


def test_full_percentages() -> None:
    f = FaultPolicy(delay=None, abort_status=555, abort_percent=100.0)
    assert all(f.decide(0.5, r / 100)[1] == 555 for r in range(100))


def test_empty_fault_is_none() -> None:
    assert fault_policy_from(None) is None
    assert fault_policy_from(HTTPFaultInjection()) is None
