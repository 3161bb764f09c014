"""meshbus-proxy --workers N: the workers die with their parent, even when it is SIGKILLed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.processes import PYTHON, ProcessGroup, free_port, is_ready, pid_alive, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _two(pids: list[int]) -> list[int] | None:
    return pids if len(pids) == 2 else None


def test_workers_of_a_sigkilled_proxy_exit_with_it(processes: ProcessGroup, tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text("# no resources\n")
    outbound, admin = free_port(), free_port()
    proxy = processes.spawn(
        "proxy",
        [
            PYTHON, "-m", "meshbus.proxy", "--config", str(config), "--workers", "2",
            "--outbound", f"127.0.0.1:{outbound}", "--inbound", "off", "--admin", f"127.0.0.1:{admin}",
        ],
    )  # fmt: skip
    wait_for("the proxy's admin /ready", lambda: is_ready(admin) or None, timeout=30)
    workers = wait_for("two workers", lambda: _two(_children(proxy.pid)))
    proxy.popen.send_signal(signal.SIGKILL)
    proxy.popen.wait(timeout=5)
    wait_for(
        "the workers to exit after their parent was SIGKILLed",
        lambda: True if not any(pid_alive(w) for w in workers) else None,
        timeout=2,
    )
