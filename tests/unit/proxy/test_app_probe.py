"""The app readiness probe without sockets: the --app-health flags, the HTTP verdict, the thresholds."""

from __future__ import annotations

import pytest

from meshbus.bus.schemas.discovery import APP_HEALTHY, APP_UNHEALTHY, APP_UNKNOWN
from meshbus.proxy.__main__ import parse_command_line
from meshbus.proxy.bootstrap import BootstrapError
from meshbus.proxy.mesh.agent import agent_settings_from_args
from meshbus.proxy.mesh.probe import (
    ProbeSpec,
    ProbeSpecError,
    ProbeTracker,
    http_passes,
    parse_probe,
    probe_from_args,
)

MESH = ["--service", "reviews", "--app-port", "9080"]


@pytest.mark.parametrize(
    ("text", "kind", "port", "path"),
    [
        ("http:/healthz", "http", 9080, "/healthz"),
        ("http:8081/ready?full=1", "http", 8081, "/ready?full=1"),
        ("http", "http", 9080, "/"),
        ("tcp", "tcp", 9080, "/"),
        ("tcp:5432", "tcp", 5432, "/"),
    ],
)
def test_probe_spec_forms(text: str, kind: str, port: int, path: str) -> None:
    spec = parse_probe(text, 9080)
    assert (spec.kind, spec.port, spec.path) == (kind, port, path)


@pytest.mark.parametrize(
    ("text", "app_port", "message"),
    [
        ("grpc:/health", 9080, "use http:/PATH, http:PORT/PATH, tcp or tcp:PORT"),
        ("http:healthz", 9080, "use http:/PATH"),
        ("tcp:5432/x", 9080, "a tcp probe has no path"),
        ("http:/healthz", None, "needs --app-port or a port"),
        ("http:70000/", 9080, "port 70000 is out of range"),
    ],
)
def test_bad_probe_specs_are_refused_with_the_flag_named(
    text: str, app_port: int | None, message: str
) -> None:
    with pytest.raises(ProbeSpecError, match="--app-health") as info:
        parse_probe(text, app_port)
    assert message in str(info.value)


def test_flags_map_to_kubernetes_probe_fields_with_fast_defaults() -> None:
    _, args = parse_command_line([*MESH, "--app-health", "http:/healthz"])
    spec = probe_from_args(args)
    assert spec == ProbeSpec("http", 9080, "/healthz", 1.0, 1.0, 1, 3)
    _, args = parse_command_line(
        [*MESH, "--app-health", "tcp", "--app-health-period", "5", "--app-health-timeout", "2",
         "--app-health-success-threshold", "2", "--app-health-failure-threshold", "4"]
    )  # fmt: skip
    assert probe_from_args(args) == ProbeSpec("tcp", 9080, "/", 5.0, 2.0, 2, 4)
    _, args = parse_command_line(MESH)
    assert probe_from_args(args) is None and agent_settings_from_args(args).service == "reviews"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "x.yaml", "--app-health", "tcp"], "--app-health is a mesh-mode flag"),
        ([*MESH, "--app-health", "udp"], "use http:/PATH"),
        ([*MESH, "--app-health", "tcp", "--app-health-failure-threshold", "0"], "at least 1"),
        ([*MESH, "--app-health", "tcp", "--app-health-period", "0"], "must be positive"),
    ],
)
def test_bad_probe_flags_stop_the_proxy_before_it_listens(argv: list[str], message: str) -> None:
    with pytest.raises((BootstrapError, ProbeSpecError), match=message):
        parse_command_line(argv)


@pytest.mark.parametrize(
    ("line", "ok", "said"),
    [
        (b"HTTP/1.1 200 OK\r\n", True, "answered 200"),
        (b"HTTP/1.0 302 Found\r\n", True, "answered 302"),
        (b"HTTP/1.1 404 Not Found\r\n", False, "answered 404"),
        (b"HTTP/1.1 500 Internal Server Error\r\n", False, "answered 500"),
        (b"SSH-2.0-OpenSSH\r\n", False, "not HTTP"),
    ],
)
def test_http_verdict_is_the_kubelets(line: bytes, ok: bool, said: str) -> None:
    passed, detail = http_passes(line)
    assert passed is ok and said in detail


def test_tracker_thresholds_and_the_unknown_start() -> None:
    t = ProbeTracker(success_threshold=2, failure_threshold=3)
    assert t.state == APP_UNKNOWN
    assert not t.record(False, "refused") and t.state == APP_UNKNOWN and t.detail == "refused"
    assert not t.record(True, "200")  # one pass of two
    assert t.record(True, "200") and t.state == APP_HEALTHY
    assert not t.record(False, "500") and not t.record(False, "500")  # two failures of three
    assert not t.record(True, "200")  # an odd pass resets the failure count
    assert not t.record(False, "500") and not t.record(False, "500") and t.state == APP_HEALTHY
    assert t.record(False, "timed out") and t.state == APP_UNHEALTHY
    assert t.detail == "timed out (3 failure(s) in a row)"
    assert not t.record(False, "timed out") and not t.record(True, "200") and t.state == APP_UNHEALTHY
    assert t.record(True, "200") and t.state == APP_HEALTHY
