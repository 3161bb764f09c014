"""Every meshctl command that needs the bus returns, with the same clear error, when NATS is down:
nobody listens on the port (refused at once), or something accepts and never speaks NATS (then
``--timeout`` bounds the connect). Before control/cli/bus_call.py, proxy-status, proxy-config,
cert inspect, token create and ca bundle never returned."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshbus.bus.errors import UnavailableError
from meshbus.control.cli.__main__ import build_parser
from meshbus.control.cli.bus_call import CONNECT_TIMEOUT, open_bus
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
    "plugins": ["plugins"],
    "authz check": ["authz", "check", "reviews-v1-sidecar"],
    "authz explain": ["authz", "explain", "--from", "productpage", "--to", "reviews"],
    "logs": ["logs"],
    "top": ["top", "--once"],
}
# Commands that never touch the bus (`up` starts its own NATS; `ps` and `down` read its state files).
NO_BUS = {"up", "ps", "down", "version", "bus init"}
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


def _run_all(commands: dict[str, list[str]], url: str, limit: float = 30) -> dict[str, tuple[int, str]]:
    """Run every command at once (each is mostly interpreter start-up); (exit code, stderr) by name.
    A command still running after ``limit`` seconds fails the test: it would not have returned."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "meshbus.control.cli", *args, "--nats", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    deadline = time.monotonic() + limit
    out = {}
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            out[name] = (proc.returncode, err.strip())
    finally:
        # every pipe closed, also of the commands that ended but were not read when one timed out:
        # left open, their ResourceWarnings fail whichever test collects them next
        for name, proc in procs.items():
            if name not in out:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
    return out


def test_every_command_fails_at_once_when_nats_refuses() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    prefix = f"Error: meshbus: cannot reach NATS at {url}: [Errno 111] Connect call failed"
    wrong = {
        name: (code, err)
        for name, (code, err) in _run_all(BUS_COMMANDS, url).items()
        # exactly one line: no log lines or tracebacks besides
        if code != 1
        or not (err.startswith(prefix) and err.endswith("(is the mesh up? try --nats URL)"))
        or len(err.splitlines()) != 1
    }
    assert not wrong, wrong


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a hung or wrong server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"nats://127.0.0.1:{s.getsockname()[1]}"


def test_timeout_bounds_the_connect_to_a_silent_server(silent_server: str) -> None:
    # the path is the one every command shares (bus_call.open_bus); the refused test covers them all
    some = ("proxy-status", "token create", "get", "cert inspect")
    commands = {name: [*BUS_COMMANDS[name], "--timeout", "0.5"] for name in some}
    expected = (1, MESSAGE.format(url=silent_server, why="no answer within 0.5s"))
    wrong = {name: got for name, got in _run_all(commands, silent_server).items() if got != expected}
    assert not wrong, wrong


@pytest.mark.parametrize("timeout", [0.3, 1.0, 10.0])
def test_open_bus_gives_up_within_the_timeout(timeout: float, silent_server: str) -> None:
    """Timed in-process: a meshctl's wall time is mostly interpreter start-up, which load stretches."""
    args = build_parser().parse_args(["get", "vs", "--nats", silent_server, "--timeout", str(timeout)])
    start = time.monotonic()
    with pytest.raises(UnavailableError, match="no answer within"):
        asyncio.run(open_bus(args))
    took = time.monotonic() - start
    bound = min(timeout, CONNECT_TIMEOUT)
    assert bound <= took < bound + 0.5, took
