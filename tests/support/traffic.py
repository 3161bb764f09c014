"""Steady traffic through a running `meshctl up` demo, and the helpers the long tests share
(tests/e2e/test_nats_cluster.py, tests/chaos/): start it, apply weights, wait for convergence."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from meshbus.control.cli.demo_plan import DemoPorts
from meshbus.control.cli.up_state import UpState, read_state
from tests.support.mesh import DEMO_CONFIG
from tests.support.processes import free_port_block, http_get, wait_for

MESHCTL = str(Path(sys.executable).parent / "meshctl")


class Traffic:
    """Requests through the demo's client sidecar, back to back, from a thread; every outcome kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: list[str] = []  # the version that answered, or why the request failed
        self.stamped = 0  # responses carrying x-chaos-stamp (a REMOTE Plugin's work, tests/chaos)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = http_get(self.port, "/", host="reviews", timeout=5)
                self.outcomes.append(
                    r.headers.get("x-demo-version", "?") if r.status == 200 else f"HTTP {r.status}"
                )
                if "x-chaos-stamp" in r.headers:
                    self.stamped += 1
            except OSError as exc:
                self.outcomes.append(f"error {exc!r}")
            self._stop.wait(0.005)  # pacing: about 100 requests a second

    def failures(self) -> list[str]:
        return [o for o in self.outcomes if o not in ("v1", "v2")]

    def recent(self, n: int) -> Counter[str]:
        return Counter(self.outcomes[-n:])

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def converged(traffic: Traffic, version: str, n: int = 30) -> bool:
    """The last ``n`` requests all went to ``version``."""
    return len(traffic.outcomes) >= n and traffic.recent(n)[version] == n


def vs_file(directory: Path, v1: int) -> Path:
    """The demo VirtualService with ``v1`` % to v1, the rest to v2."""
    path = directory / f"vs-{v1}.yaml"
    weights = iter((v1, 100 - v1))
    text = DEMO_CONFIG.joinpath("virtual-service.yaml").read_text()
    path.write_text(re.sub(r"weight: \d+", lambda _m: f"weight: {next(weights)}", text))
    return path


def meshctl(data_dir: Path, url: str, *args: str, timeout: str = "5") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MESHBUS_DATA_DIR=str(data_dir), COLUMNS="200")
    return subprocess.run(
        [MESHCTL, *args, "--nats", url, "--timeout", timeout],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def pid_of(state: UpState, name: str) -> int:
    return next(p.pid for p in state.processes if p.name == name)


@contextmanager
def start_up(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], DemoPorts, str]]:
    """`meshctl up` with the tests' demo config on free ports, until "meshbus is up"; stopped (and
    thawed, if a test froze it) on exit. Output to a file: an unread pipe would block its prints."""
    base = free_port_block(DemoPorts.count())
    argv = ["up", "--nats-port", "0", "--data-dir", str(data_dir), "--ports-from", str(base), *extra]
    out = data_dir / "meshctl-up.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [MESHCTL, *argv, "--demo-config", str(DEMO_CONFIG)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, COLUMNS="200", **(env or {})),
        )
    try:
        wait_for("meshctl up", lambda: "meshbus is up" in out.read_text() or proc.poll() is not None, 120)
        assert proc.poll() is None, out.read_text()
        state = read_state(data_dir)
        assert state is not None
        yield proc, DemoPorts.starting_at(base), state.nats_url
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def wait_converged(traffic: Traffic, version: str, timeout: float = 30) -> float:
    """Seconds until every recent request goes to ``version``."""
    started = time.monotonic()
    wait_for(f"the traffic to converge on {version}", lambda: converged(traffic, version), timeout)
    return time.monotonic() - started
