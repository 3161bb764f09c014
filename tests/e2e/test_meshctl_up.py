"""`meshctl up` as a user runs it: starts NATS and the demo mesh, routes through the demo sidecar,
stays up, stops everything on Ctrl-C / SIGTERM with no process left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from meshbus.control.cli.demo_plan import DemoPorts
from tests.support.mesh import DEMO_CONFIG
from tests.support.processes import free_port_block, http_get

pytestmark = pytest.mark.timeout(60)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed; output:\n{''.join(seen)}")


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize(("sig", "demo"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_up_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals, demo: bool) -> None:
    meshctl = Path(sys.executable).parent / "meshctl"
    base = free_port_block(DemoPorts.count())
    extra = ["--ports-from", str(base), "--demo-config", str(DEMO_CONFIG)] if demo else ["--no-demo"]
    proc = subprocess.Popen(
        [str(meshctl), "up", "--nats-port", "0", "--data-dir", str(tmp_path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
    )
    try:
        out = _read_until(proc, "meshbus is up")
        pids = [int(p) for p in re.findall(r"pid (\d+)", out)] + [
            int(p) for p in re.findall(r"│\s+(\d+)\s+│", out)
        ]
        assert pids, out
        assert all(_pid_alive(p) for p in pids)
        assert (tmp_path / "nats" / "jetstream").is_dir()
        if demo:
            assert len(pids) == 1 + 8, out  # nats, config, discovery, ca, 2 apps, 3 sidecars
            ports = DemoPorts.starting_at(base)
            # ready means routed: the demo config (90/10) is applied before "meshbus is up"
            seen: Counter[str] = Counter()
            for _ in range(100):
                r = http_get(ports.client_outbound, "/", host="reviews")
                assert r.status == 200, r
                seen[r.headers["x-demo-version"]] += 1
            assert seen["v1"] > seen["v2"] > 0, seen
            # sidecar to sidecar is mTLS: the reviews sidecars log the caller's SPIFFE ID
            access_log = tmp_path / "logs" / "reviews-v1-sidecar.access.log"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and '"downstream_peer_principal"' not in _text(access_log):
                time.sleep(0.05)
            first = json.loads(_text(access_log).splitlines()[0])
            assert first["downstream_peer_principal"] == "spiffe://cluster.local/ns/default/sa/productpage"
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "stopped." in rest
        deadline = time.monotonic() + 5
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if _pid_alive(p)], "orphan processes left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
