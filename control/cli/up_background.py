"""`meshctl up --detach`, `meshctl ps`, `meshctl down`: the mesh in the background.

``up --detach`` starts the same ``meshctl up`` again as a session of its own (no terminal: closing
the shell does not stop it), its output in <data-dir>/logs/meshctl-up.log, and waits on a pipe
until it says the mesh is up (or exits: then its log is shown). ``ps`` prints the table of what
runs, restarts included, from <data-dir>/up.json. ``down`` sends the supervisor SIGTERM and waits
for it to stop its children; if it is gone already, it kills whatever it recorded that still runs
(the very processes: pid and kernel start time must both match).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .up_state import AlreadyRunning, UpState, read_state, remove_state, running_pid

READY_FD_ENV = "MESHBUS_UP_READY_FD"
"""Set for a detached supervisor: the pipe on which it says "up" to the ``up --detach`` that started it."""
SUPERVISOR_LOG = "meshctl-up.log"


def default_data_dir() -> str:
    return os.environ.get("MESHBUS_DATA_DIR", ".meshbus")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--data-dir", default=default_data_dir(), help="state directory of that meshctl up")

    p = sub.add_parser("ps", parents=[common, where], help="what a running meshctl up runs (pids, restarts)")
    p.set_defaults(func=run_ps)

    p = sub.add_parser("down", parents=[common, where], help="stop a meshctl up (--detach or not)")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for it to stop before killing it"
    )
    p.set_defaults(func=run_down)


# -- the table (printed by up, up --detach and ps)
def print_table(console: Console, state: UpState) -> None:
    table = Table(title="meshbus", title_justify="left")
    table.add_column("COMPONENT")
    table.add_column("PID", justify="right")
    table.add_column("RESTARTS", justify="right")
    table.add_column("WHERE")
    for p in state.processes:
        pid = str(p.pid) if p.state == "running" else p.state
        table.add_row(p.name, pid, str(p.restarts), p.where)
    console.print(table)
    console.print(f"logs: {state.logs}")


# -- up --detach
def detach(args: argparse.Namespace, data_dir: Path) -> int:
    pid = running_pid(data_dir)
    if pid is not None:
        print(f"Error: {AlreadyRunning(data_dir, pid)}", file=sys.stderr)
        return 1
    log = data_dir / "logs" / SUPERVISOR_LOG
    read_end, write_end = os.pipe()
    env = dict(os.environ, **{READY_FD_ENV: str(write_end)})
    env.setdefault("COLUMNS", "200")  # its tables go to a log file: no terminal to fit
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "meshbus.control.cli", *args.argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end,),
                start_new_session=True,
            )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        # It writes "up" once the mesh is up; EOF without it means it exited.
        wait = args.ready_timeout + args.grace + 30
        said = ready.readline() if select.select([ready], [], [], wait)[0] else b""
    if said.strip() != b"up":
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=args.grace + 10)
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print(f"Error: meshctl up did not come up; the end of {log}:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        return 1
    state = read_state(data_dir)
    console = Console(highlight=False)
    if state is not None:
        print_table(console, state)
    console.print(
        f"meshbus is up in the background (pid {proc.pid}); `meshctl ps` shows it, `meshctl down` stops it."
        f" Its own log: {log}",
        style="bold green",
    )
    return 0


def tell_launcher_ready() -> None:
    """In a detached supervisor: tell the ``up --detach`` waiting on the pipe that the mesh is up."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(int(fd), b"up\n")
        os.close(int(fd))


# -- ps
def run_ps(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    state = read_state(data_dir)
    if running_pid(data_dir) is None or state is None:
        print(f"meshbus is not running (no meshctl up for {data_dir})", file=sys.stderr)
        return 1
    print_table(Console(highlight=False), state)
    return 0


# -- down
def run_down(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    pid = running_pid(data_dir)
    if pid is None:
        left = _kill_recorded(data_dir)
        print(
            f"meshbus is not running for {data_dir}"
            + (f"; killed {left} process(es) it had left" if left else ""),
            file=sys.stderr,
        )
        return 0
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, args.timeout):
        print(f"meshctl up (pid {pid}) did not stop within {args.timeout:g}s; killing it", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)  # its children die with it (kernel death signal)
        _wait_gone(pid, 5.0)
        _kill_recorded(data_dir)
    print(f"stopped meshbus (meshctl up pid {pid})")
    return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` exited (a pidfd turns readable then: no polling of a process not our child)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], max(0.0, timeout))[0])
    finally:
        os.close(fd)


def _kill_recorded(data_dir: Path) -> int:
    state = read_state(data_dir)
    if state is None:
        return 0
    alive = [p for p in state.processes if p.alive()]
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    remove_state(data_dir)
    return len(alive)
