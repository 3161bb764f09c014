"""meshctl up — run the whole mesh on this machine.

Starts the embedded nats-server (or uses ``--nats URL``), then the control plane and the demo
mesh (`demo_plan`), each as its own child process; waits until every sidecar answers ``/ready``
and applies the demo config through meshbus-config; prints what runs where; stays up until
Ctrl-C (or SIGTERM); then stops its children in reverse order and the server last. A child that
dies is reported, and the rest keep running.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
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
    admin_port: int | None = None
    """A proxy's admin port: `meshctl up` waits for its ``/ready``."""
    identity: tuple[str, str] | None = None
    """(namespace, service account) of a sidecar: it gets a bootstrap token from meshbus-ca (env
    MESHBUS_TOKEN, never argv) unless ``--no-mtls``; children with one start after the CA answers."""


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
    p.add_argument(
        "--ports-from",
        type=int,
        default=None,
        metavar="N",
        help=f"put the demo's {demo_plan.DemoPorts.count()} ports at N, N+1, ... (default: 15001, 15000, 9081, ...)",
    )
    p.add_argument(
        "--demo-config", default=str(demo_plan.SAMPLES), help="Istio YAML applied once the mesh is up"
    )
    p.add_argument(
        "--ready-timeout", type=float, default=60.0, help="seconds to wait for the mesh to be ready"
    )
    p.add_argument(
        "--no-mtls",
        action="store_true",
        help="run the demo sidecars without workload certificates (plain HTTP)",
    )
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
        children = (
            []
            if args.no_demo
            else demo_plan.children(data_dir, python=sys.executable, ports_from=args.ports_from)
        )
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        deadline = time.monotonic() + args.ready_timeout
        tokens: dict[str, str] = {}
        for child in children:
            extra: dict[str, str] = {}
            if child.identity and not args.no_mtls:
                if not tokens:
                    wanted = {c.name: c.identity for c in children if c.identity}
                    tokens = asyncio.run(mint_tokens(nats_url, args.subject_root, wanted, deadline))
                extra["MESHBUS_TOKEN"] = tokens[child.name]
            with open(logs / f"{child.name}.log", "ab") as out:
                proc = subprocess.Popen(
                    child.argv,
                    env={**env, **child.env, **extra},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append((child, proc))
        if children:
            problem = _wait_ready(args, nats_url, procs, stop)
            if problem:
                console.print(f"[red]{problem}[/red]")
                if stop.is_set():
                    return 0
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


def _wait_ready(
    args: argparse.Namespace,
    nats_url: str,
    procs: list[tuple[Child, subprocess.Popen[bytes]]],
    stop: threading.Event,
) -> str:
    """Apply the demo config once meshbus-config answers, then wait for every sidecar's /ready.

    Returns "" when all is ready, else what is not (the mesh keeps running: the operator can look).
    """
    deadline = time.monotonic() + args.ready_timeout
    config_dir = Path(args.demo_config)
    if config_dir.is_dir():
        error = asyncio.run(_apply_when_up(args, nats_url, config_dir, deadline, stop))
        if error:
            return error
    pending = {child.name: child.admin_port for child, _ in procs if child.admin_port}
    while pending and not stop.is_set() and time.monotonic() < deadline:
        for name, port in list(pending.items()):
            if port is not None and _ready(port):
                del pending[name]
        if pending:
            dead = [c.name for c, p in procs if p.poll() is not None]
            if dead:
                return f"not ready: {', '.join(dead)} exited (see the logs)"
            stop.wait(0.05)
    return f"not ready after {args.ready_timeout:.0f}s: {', '.join(sorted(pending))}" if pending else ""


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


async def mint_tokens(
    nats_url: str, root: str, wanted: dict[str, tuple[str, str]], deadline: float
) -> dict[str, str]:
    """One single-use bootstrap token per name in ``wanted`` (name -> (namespace, service account)),
    once meshbus-ca answers; UnavailableError if it does not before ``deadline`` (monotonic)."""
    from meshbus.bus import rpc
    from meshbus.bus.connection import BusConnection, BusSettings
    from meshbus.bus.errors import NotReadyError, RequestTimeoutError, UnavailableError
    from meshbus.bus.schemas.identity import TokenCreateReply, TokenCreateRequest

    bus = BusConnection(BusSettings(url=nats_url, name="meshctl up", root=root))
    out: dict[str, str] = {}
    try:
        await asyncio.wait_for(bus.connect(wait=True), max(0.1, deadline - time.monotonic()))
        for name, (namespace, account) in wanted.items():
            req = TokenCreateRequest(
                namespace=namespace, service_account=account, ttl_seconds=600, max_uses=1
            )
            while name not in out:
                try:
                    reply = await rpc.request(
                        bus, bus.subjects.ca("token"), req, TokenCreateReply, timeout=2.0
                    )
                    out[name] = reply.token
                except (UnavailableError, NotReadyError, RequestTimeoutError) as exc:
                    if time.monotonic() > deadline:
                        raise UnavailableError(f"meshbus-ca did not answer: {exc}") from exc
                    await asyncio.sleep(0.05)  # meshbus-ca is still starting
    except TimeoutError:
        raise UnavailableError(f"NATS at {nats_url} did not answer") from None
    finally:
        await bus.close()
    return out


async def _apply_when_up(
    args: argparse.Namespace, nats_url: str, config_dir: Path, deadline: float, stop: threading.Event
) -> str:
    from meshbus.bus.connection import BusConnection, BusSettings
    from meshbus.bus.errors import NotReadyError, RequestTimeoutError, UnavailableError
    from meshbus.control.config.client import ConfigClient

    from .manifests import collect

    documents = collect([str(config_dir)])
    bus = BusConnection(BusSettings(url=nats_url, name="meshctl up", root=args.subject_root))
    try:
        await asyncio.wait_for(bus.connect(wait=True), max(0.1, deadline - time.monotonic()))
        client = ConfigClient(bus, timeout=2.0)
        while not stop.is_set():
            try:
                # Its warnings (host "reviews" not found yet) are expected: the sidecars register later.
                await client.apply(documents)
                return ""
            except (UnavailableError, NotReadyError, RequestTimeoutError) as exc:
                if time.monotonic() > deadline:
                    return f"meshbus-config did not answer: {exc}"
                await asyncio.sleep(0.05)  # no responder yet: meshbus-config is still starting
        return ""
    except TimeoutError:
        return f"NATS at {nats_url} did not answer"
    finally:
        await bus.close()
