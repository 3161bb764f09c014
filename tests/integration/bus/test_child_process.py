"""die_with_parent: a child (a plain program, and the embedded nats-server) dies when its parent is
SIGKILLed, which runs no cleanup at all; a child started without it keeps running (the control)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from meshbus.bus.child_process import die_with_parent
from tests.support.nats_server import require_binary
from tests.support.processes import pid_alive, wait_for

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(die_with_parent() is None, reason="the kernel death signal is Linux-only"),
]

PARENT = """
import subprocess, sys
from meshbus.bus.child_process import die_with_parent
from meshbus.bus.embedded import EmbeddedNats

bound = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent())
free = subprocess.Popen(["sleep", "60"], start_new_session=True)
nats = EmbeddedNats(port=0, jetstream=False, die_with_parent=True)
nats.start()
print(bound.pid, nats.pid, free.pid, flush=True)
sys.stdin.read()
"""


def test_children_die_with_a_sigkilled_parent() -> None:
    require_binary()
    free = 0
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            bound, nats, free = (int(p) for p in parent.stdout.readline().split())
            assert all(pid_alive(p) for p in (bound, nats, free))
            parent.kill()
            parent.wait()
            wait_for("the bound children to die", lambda: not pid_alive(bound) and not pid_alive(nats), 2.0)
            assert pid_alive(free)  # without the death signal a child outlives its parent
        finally:
            parent.kill()
            if free:
                os.kill(free, signal.SIGKILL)
