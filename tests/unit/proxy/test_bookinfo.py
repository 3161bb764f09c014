"""Istio's traffic-management tasks on the bookinfo samples, loaded from YAML with load_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.config import load_path
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.filters.fault import FAULT, FaultPolicy
from tests.unit.proxy.conftest import req

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "bookinfo.yaml"


@pytest.fixture
def rt() -> ProxyRuntime:
    result = load_path(FIXTURE)
    return build_runtime(result.raise_for_errors(), app_port=9080)


def test_request_routing_by_end_user(rt: ProxyRuntime) -> None:
    jason = rt.outbound.match(req(authority="reviews:9080", headers={"end-user": "jason"}))
    other = rt.outbound.match(req(authority="reviews:9080", headers={"end-user": "alice"}))
    anon = rt.outbound.match(req(authority="reviews:9080"))
    assert jason.pick_destination(0.5).subset == "v2"
    assert other.pick_destination(0.5).subset == anon.pick_destination(0.5).subset == "v1"
    ep = rt.clusters[jason.pick_destination(0.5).cluster].pick(None, 0.0)
    assert ep is not None and ep.address == "10.1.0.2"


def test_fault_abort_for_jason_only(rt: ProxyRuntime) -> None:
    jason = rt.outbound.match(req(authority="ratings:9080", headers={"end-user": "jason"}))
    anon = rt.outbound.match(req(authority="ratings:9080"))
    fault = jason.filter_config[FAULT]
    assert isinstance(fault, FaultPolicy) and fault.decide(0.99, 0.99) == (None, 500)
    assert FAULT not in anon.filter_config


def test_circuit_breaking_task(rt: ProxyRuntime) -> None:
    c = rt.clusters["outbound|8000||httpbin.default.svc.cluster.local"]
    assert c.endpoints[0].key == ("10.3.0.1", 80)  # targetPort
    assert (c.pool.max_connections, c.pool.max_pending, c.pool.max_requests_per_connection) == (1, 1, 1)
    assert c.breaker.try_enqueue_pending() and not c.breaker.try_enqueue_pending()
    c.breaker.dequeue_pending()
    ep = c.pick(None, 0.0)
    c.record_result(ep, status=502, error=None, now=10.0)
    assert c.pick(None, 11.0) is None  # the only host is out for baseEjectionTime (3m)
    c.tick(190.0)
    assert c.pick(None, 190.0) is ep


def test_default_route_for_httpbin(rt: ProxyRuntime) -> None:
    route = rt.outbound.match(req(authority="httpbin:8000", path="/status/200"))
    assert route is not None and route.name == "default"
    assert rt.outbound.match(req(authority="httpbin", path="/")) is route  # only port: default


def test_inbound_to_app(rt: ProxyRuntime) -> None:
    route = rt.inbound.match(req(authority="reviews:9080"))
    assert route.pick_destination(0.0).cluster == "inbound|9080||"
