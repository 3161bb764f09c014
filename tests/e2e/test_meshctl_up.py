"""`meshctl up` as a user runs it: starts NATS (and the mesh), stays up, stops everything on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    meshctl = Path(sys.executable).parent / "meshctl"
    proc = subprocess.Popen(
        [str(meshctl), "up", "--nats-port", "0", "--data-dir", str(tmp_path)],
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
