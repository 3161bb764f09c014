"""Every meshctl command that needs the bus returns, with the same clear error, when NATS is down:
nobody listens on the port (refused at once), or something accepts and never speaks NATS (then
``--timeout`` bounds the connect). Before control/cli/bus_call.py, proxy-status, proxy-config,
cert inspect, token create and ca bundle never returned."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbus.control.cli.__main__ import build_parser
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "demo"

# Every command that talks to the bus, with the arguments it needs otherwise.
BUS_COMMANDS = {
    "apply": ["apply", "-f", str(FIXTURES)],
    "delete": ["delete", "vs", "reviews"],
    "get": ["get", "vs"],
    "history": ["history", "vs", "reviews"],
    "rollback": ["rollback", "vs", "reviews", "--to", "1"],
    "analyze": ["analyze"],
    "proxy-status": ["proxy-status"],
    "proxy-config": ["proxy-config", "productpage-sidecar"],
    "token create": ["token", "create", "-n", "default", "--sa", "reviews"],
    "ca bundle": ["ca", "bundle"],
    "cert inspect": ["cert", "inspect", "productpage-sidecar"],
}
# Commands that never touch the bus (`up` starts its own NATS; `ps` and `down` read its state files).
NO_BUS = {"up", "ps", "down", "version"}
MESSAGE = "Error: meshbus: cannot reach NATS at {url}: {why} (is the mesh up? try --nats URL)"


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_commands(sub, f"{prefix}{name} ")
            return
    yield prefix.strip()


def test_every_bus_command_is_covered() -> None:
    assert set(_leaf_commands(build_parser())) == set(BUS_COMMANDS) | NO_BUS


def _meshctl(args: list[str], url: str, limit: float) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "meshbus.control.cli", *args, "--nats", url],
        capture_output=True,
        text=True,
        timeout=limit,
    )
    return r, time.monotonic() - start


@pytest.mark.parametrize("command", sorted(BUS_COMMANDS))
def test_refused_connection_fails_at_once(command: str) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    r, took = _meshctl(BUS_COMMANDS[command], url, limit=10)
    assert r.returncode == 1, r
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"Error: meshbus: cannot reach NATS at {url}: "), r.stderr
    assert first.endswith("(is the mesh up? try --nats URL)"), r.stderr
    assert "Connect call failed" in first, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # no log lines or tracebacks besides
    assert took < 5, took  # a refused connect is known at once (the rest is interpreter start-up)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a hung or wrong server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"nats://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("command", ["proxy-status", "token create", "get", "cert inspect"])
def test_timeout_bounds_the_connect_to_a_silent_server(command: str, silent_server: str) -> None:
    r, took = _meshctl([*BUS_COMMANDS[command], "--timeout", "0.5"], silent_server, limit=20)
    assert r.returncode == 1, r
    assert r.stderr.strip() == MESSAGE.format(url=silent_server, why="no answer within 0.5s"), r.stderr
    assert took < 3.5, took  # 0.5 s of waiting plus interpreter start-up
