"""Child processes that die with their parent, however the parent dies.

A parent that is SIGKILLed (or crashes) runs no cleanup, so its children would keep running,
holding ports and serving traffic. On Linux the kernel can deliver a signal to a child when its
parent dies (``prctl(PR_SET_PDEATHSIG)``); `die_with_parent` returns the ``preexec_fn`` that asks
for it, in the child between fork and exec, so it covers any program (nats-server, Python).

The kernel's "parent" is the *thread* that forked: spawn from a thread that lives as long as the
parent does (meshctl up spawns from its main thread). Other systems have no such call:
`die_with_parent` returns None there, and only an orderly stop of the parent stops its children.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Loaded in the parent: the child must not load a library between fork and exec.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess.Popen: the child gets ``sig`` when this process dies.

    None where the OS cannot do it (not Linux)."""
    if _libc is None:
        return None
    libc = _libc
    parent = os.getpid()

    def preexec() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            # Popen raises in the parent: a child that could outlive it is not started at all
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl: nobody will send the signal
            os.kill(os.getpid(), sig)

    return preexec
