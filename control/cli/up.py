"""meshctl up — run the whole mesh on this machine.

Starts the embedded nats-server (or uses ``--nats URL``), then every meshbus process
that exists so far, each as its own child process; prints what runs where; stays up
until Ctrl-C (or SIGTERM); then stops its children in reverse order and the server
last. A child that dies is reported, and the rest keep running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meshbus.bus.embedded import EmbeddedNats

from . import demo_plan


@dataclass(frozen=True, slots=True)
class Child:
    """One process meshctl up runs."""

    name: str
    argv: tuple[str, ...]
    where: str
    env: dict[str, str] = field(default_factory=dict)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("up", parents=[common], help="run the mesh locally until Ctrl-C")
    p.add_argument(
        "--nats-port", type=int, default=4222, help="port of the embedded nats-server (0 = any free port)"
    )
    p.add_argument(
        "--data-dir", default=os.environ.get("MESHBUS_DATA_DIR", ".meshbus"), help="state directory"
    )
    p.add_argument("--no-demo", action="store_true", help="do not start the demo services and their sidecars")
    p.add_argument("--grace", type=float, default=10.0, help="seconds each child gets to drain on shutdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    server: EmbeddedNats | None = None
    procs: list[tuple[Child, subprocess.Popen[bytes]]] = []
    try:
        if args.nats:
            nats_url, nats_where = args.nats, f"{args.nats} (external)"
        else:
            server = EmbeddedNats(
                port=args.nats_port,
                store_dir=str(data_dir / "nats"),
                log_path=str(data_dir / "nats-server.log"),
            )
            nats_url = server.start()
            nats_where = f"{nats_url} (embedded, JetStream in {data_dir / 'nats'}, pid {server.pid})"
        env = dict(os.environ, MESHBUS_NATS_URL=nats_url, MESHBUS_SUBJECT_ROOT=args.subject_root)
        children = [] if args.no_demo else demo_plan.children(data_dir, python=sys.executable)
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        for child in children:
            with open(logs / f"{child.name}.log", "ab") as out:
                proc = subprocess.Popen(
                    child.argv,
                    env={**env, **child.env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append((child, proc))
        _print_table(console, nats_where, procs, logs)
        console.print("meshbus is up. Press Ctrl-C to stop.", style="bold green")
        sys.stdout.flush()
        reported: set[int] = set()
        while not stop.wait(0.5):
            for child, proc in procs:
                if proc.poll() is not None and proc.pid not in reported:
                    reported.add(proc.pid)
                    console.print(
                        f"[red]{child.name} exited with code {proc.returncode}; see {logs / (child.name + '.log')}[/red]"
                    )
        console.print("stopping...")
        return 0
    finally:
        _stop_children(procs, args.grace)
        if server is not None:
            server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        console.print("stopped.")


def _print_table(
    console: Console, nats_where: str, procs: list[tuple[Child, subprocess.Popen[bytes]]], logs: Path
) -> None:
    table = Table(title="meshbus", title_justify="left")
    table.add_column("COMPONENT")
    table.add_column("PID", justify="right")
    table.add_column("WHERE")
    table.add_row("nats-server", "", nats_where)
    for child, proc in procs:
        table.add_row(child.name, str(proc.pid), child.where)
    console.print(table)
    console.print(f"logs: {logs}")


def _stop_children(procs: list[tuple[Child, subprocess.Popen[bytes]]], grace: float) -> None:
    for _child, proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _child, proc in reversed(procs):
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
