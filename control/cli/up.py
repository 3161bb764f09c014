"""meshctl up — run the whole mesh on this machine, as a supervisor that never orphans it.

Starts the embedded nats-server (or uses ``--nats URL``), then the control plane and the demo mesh
(`demo_plan`), each as its own child process under a `Supervisor`: one process group, one log per
process in <data-dir>/logs/, and every child dies with ``meshctl up`` however it dies (SIGKILL
included). Waits until every sidecar answers ``/ready`` and applies the demo config through
meshbus-config, prints what runs where, and stays up until SIGINT, SIGTERM or SIGHUP (a closed
terminal); then stops the children in reverse order and the server last. A second such signal
kills them all at once. A child that exits is restarted with backoff (a sidecar with a fresh
bootstrap token) and counted in the table (`meshctl ps`). ``--detach`` runs it in the background
(`up_background`); its state is in the data dir (`up_state`).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import BusError

from . import bus_auth, demo_plan, nats_cluster, up_background
from .supervisor import Command, NatsServer, Supervisor
from .up_state import AlreadyRunning, PidLock, ProcessRecord, UpState, remove_state, start_ticks, write_state

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_CEILING = 1.0
"""Longest the supervisor waits without looking at its children. SIGCHLD wakes it at once when the
kernel hands the signal to the main thread; handed to another thread (a nats-server log reader), it
would not, and a dead child would wait for the next signal (found killing two nodes of a cluster)."""
RESTART_TOKEN_WAIT = 10.0
"""Seconds a restarting sidecar waits for meshbus-ca to mint its new token (then: retried later)."""


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
    MESHBUS_TOKEN, never argv) unless ``--no-mtls``, at its first start and at every restart."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("up", parents=[common], help="run the mesh locally until Ctrl-C (or --detach)")
    p.add_argument(
        "--nats-port", type=int, default=4222, help="port of the embedded nats-server (0 = any free port)"
    )
    p.add_argument("--data-dir", default=up_background.default_data_dir(), help="state directory")
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
    p.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="N",
        help="run N embedded nats-server nodes as one JetStream cluster (3: KV kept on three, one may die)",
    )
    p.add_argument(
        "--insecure-bus",
        action="store_true",
        help="run NATS without TLS, users or permissions (debugging only: any process may then publish "
        "config, push snapshots or answer CA requests)",
    )
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run in the background once the mesh is up (`meshctl ps` shows it, `meshctl down` stops it)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    if args.detach and up_background.READY_FD_ENV not in os.environ:
        return up_background.detach(args, data_dir)
    lock = PidLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    try:
        return _Up(args, data_dir).run()
    finally:
        lock.release()


class _Up:
    """One run of the supervisor: signals, start order, readiness, the table, the stop."""

    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.console = Console(highlight=False)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.phase = "starting"
        self.nats_url = ""
        self.tokens: dict[str, str] = {}
        self.minted = False
        self.bus_files: bus_auth.BusFiles | None = None
        self.cluster_env: dict[str, str] = {}
        """The secured bus's credentials (None: --insecure-bus, or --nats: someone else's server)."""
        self.sup = Supervisor(say=lambda text: self.say(escape(text)), on_change=self.save)

    def say(self, text: str) -> None:
        """Print a line (rich markup); the supervisor's own messages come escaped."""
        try:
            self.console.print(text)
            sys.stdout.flush()
        except OSError:  # the terminal is gone (SIGHUP): the mesh must still be stopped
            pass

    def show_table(self) -> None:
        try:
            up_background.print_table(self.console, self.state())
        except OSError:  # the terminal is gone
            pass

    def state(self) -> UpState:
        records = [
            ProcessRecord(
                e.name, pid, start_ticks(pid) or 0, e.restarts, e.state, e.where, str(self._log(e.name))
            )
            for e in self.sup.entries
            if (pid := e.process.pid) is not None
        ]
        return UpState(os.getpid(), self.phase, self.nats_url, self.sup.pgid or 0, str(self.logs), records)

    def save(self) -> None:
        write_state(self.data_dir, self.state())

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGCHLD:
            self.wake.set()
        elif self.stop.is_set():
            self.sup.kill_group()  # a second stop signal: no more waiting for drains
        else:
            self.stop.set()
            self.wake.set()

    def run(self) -> int:
        handled = (*STOP_SIGNALS, signal.SIGCHLD)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            if not self._start_all():
                return 1
            if self.stop.is_set():
                return 0
            self.phase = "up"
            self.save()
            self.show_table()
            self.say("[bold green]meshbus is up.[/bold green] Press Ctrl-C to stop.")
            up_background.tell_launcher_ready()
            while not self.stop.is_set():
                due = self.sup.next_due()
                until_due = POLL_CEILING if due is None else max(0.0, due - time.monotonic())
                self.wake.wait(min(until_due, POLL_CEILING))
                self.wake.clear()
                if self.sup.poll():
                    self.show_table()
            self.say("stopping...")
            return 0
        finally:
            self.phase = "stopping"
            self.sup.stop_all(self.args.grace)
            remove_state(self.data_dir)
            for s, h in previous.items():
                signal.signal(s, h)
            self.say("stopped.")

    def _start_all(self) -> bool:
        """Start NATS and every child, apply the demo config, wait for the sidecars; False on failure."""
        args = self.args
        try:
            children = (
                []
                if args.no_demo
                else demo_plan.children(
                    self.data_dir, python=sys.executable, ports_from=args.ports_from, root=args.subject_root
                )
            )
            if args.nats:
                self.nats_url = args.nats
            else:
                if not args.insecure_bus:
                    self.bus_files = bus_auth.prepare_for_up(
                        self.data_dir, [(c.name, c.argv, c.identity) for c in children],
                        root=args.subject_root, mtls=not args.no_mtls,
                    )  # fmt: skip
                if args.nats_cluster > 1:
                    self._start_cluster(args.nats_cluster)
                else:
                    server = EmbeddedNats(
                        port=args.nats_port,
                        store_dir=str(self.data_dir / "nats"),
                        log_path=str(self.logs / "nats-server.log"),
                        extra_args=bus_auth.server_args(self.bus_files),
                    )
                    entry = self.sup.add("nats-server", "", NatsServer(server), stop_last=True)
                    self.nats_url = server.url
                    entry.where = f"{server.url} (embedded, JetStream in {self.data_dir / 'nats'})"
                    entry.where += bus_auth.describe(self.bus_files)
            for child in children:
                if self.stop.is_set():
                    return True
                command = Command(child.argv, self._log(child.name), self._env_for(child, children))
                self.sup.add(child.name, child.where, command)
        except BusError as exc:
            self.say(f"[red]{escape(str(exc))}[/red]")
            return False
        if children:
            problem = _wait_ready(args, self.nats_url, children, self.stop, self.sup, self.bus_files)
            if problem:
                self.say(f"[red]{escape(problem)}[/red]")
        return True

    def _start_cluster(self, size: int) -> None:
        nodes = nats_cluster.plan(
            self.data_dir, size, client_port=self.args.nats_port, secured=self.bus_files is not None
        )
        urls = []
        for spec in nodes:
            server = nats_cluster.server(spec, self.logs)
            entry = self.sup.add(f"nats-{spec.name}", "", NatsServer(server), stop_last=True)
            urls.append(server.url)
            entry.where = f"{server.url}, routes :{spec.cluster_port} (JetStream in {spec.store})"
            entry.where += bus_auth.describe(self.bus_files)
        self.nats_url = ",".join(urls)
        self.cluster_env = nats_cluster.child_env(urls, size)
        settings = bus_auth.client_settings(
            self.bus_files, "config", nats_cluster.probe_settings(self.nats_url)
        )
        deadline = time.monotonic() + self.args.ready_timeout
        asyncio.run(nats_cluster.wait_for_jetstream(settings, deadline))

    def _env_for(self, child: Child, children: list[Child]) -> Callable[[], dict[str, str]]:
        base = dict(os.environ, MESHBUS_NATS_URL=self.nats_url, MESHBUS_SUBJECT_ROOT=self.args.subject_root)
        base.update(self.cluster_env)
        base.pop(up_background.READY_FD_ENV, None)
        if self.bus_files is not None:
            base.update(
                bus_auth.env_for_up(self.bus_files, child.name, child.argv, child.identity, self.args.no_mtls)
            )
        identity = child.identity
        if identity is None or self.args.no_mtls:
            return lambda: {**base, **child.env}

        def env() -> dict[str, str]:
            # A bootstrap token serves once: the first starts share one batch, minted when the CA
            # answers; a restart gets a fresh one (a sidecar keeping its identity is its own business).
            if not self.minted:
                wanted = {c.name: c.identity for c in children if c.identity}
                deadline = time.monotonic() + self.args.ready_timeout
                self.tokens = self._mint(wanted, deadline)
                self.minted = True
            token = self.tokens.pop(child.name, None)
            if token is None:
                token = self._mint({child.name: identity}, time.monotonic() + RESTART_TOKEN_WAIT)[child.name]
            return {**base, **child.env, "MESHBUS_TOKEN": token}

        return env

    def _mint(self, wanted: dict[str, tuple[str, str]], deadline: float) -> dict[str, str]:
        return asyncio.run(
            mint_tokens(
                self.nats_url, self.args.subject_root, wanted, deadline, self.stop, bus_files=self.bus_files
            )
        )


def _wait_ready(
    args: argparse.Namespace,
    nats_url: str,
    children: list[Child],
    stop: threading.Event,
    sup: Supervisor,
    bus_files: bus_auth.BusFiles | None = None,
) -> str:
    """Apply the demo config once meshbus-config answers, then wait for every sidecar's /ready
    (restarting children that crash meanwhile).

    Returns "" when all is ready, else what is not (the mesh keeps running: the operator can look).
    """
    deadline = time.monotonic() + args.ready_timeout
    config_dir = Path(args.demo_config)
    if config_dir.is_dir():
        error = asyncio.run(_apply_when_up(args, nats_url, config_dir, deadline, stop, bus_files))
        if error:
            return error
    pending = {child.name: child.admin_port for child in children if child.admin_port}
    while pending and not stop.is_set() and time.monotonic() < deadline:
        sup.poll()
        for name, port in list(pending.items()):
            if port is not None and _ready(port):
                del pending[name]
        if pending:
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
    nats_url: str,
    root: str,
    wanted: dict[str, tuple[str, str]],
    deadline: float,
    stop: threading.Event | None = None,
    *,
    bus_files: bus_auth.BusFiles | None = None,
) -> dict[str, str]:
    """One single-use bootstrap token per name in ``wanted`` (name -> (namespace, service account)),
    once meshbus-ca answers; UnavailableError if it does not before ``deadline`` (monotonic) or
    ``stop`` is set. ``bus_files``: a secured bus's credentials (only the operator may ask for tokens)."""
    from meshbus.bus import rpc
    from meshbus.bus.connection import BusConnection
    from meshbus.bus.errors import NotReadyError, RequestTimeoutError, UnavailableError
    from meshbus.bus.schemas.identity import TokenCreateReply, TokenCreateRequest

    bus = BusConnection(bus_auth.operator_settings(nats_url, root, bus_files))
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
                    if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                        raise UnavailableError(f"meshbus-ca did not answer: {exc}") from exc
                    await asyncio.sleep(0.05)  # meshbus-ca is still starting
    except TimeoutError:
        raise UnavailableError(f"NATS at {nats_url} did not answer") from None
    finally:
        await bus.close()
    return out


async def _apply_when_up(
    args: argparse.Namespace,
    nats_url: str,
    config_dir: Path,
    deadline: float,
    stop: threading.Event,
    bus_files: bus_auth.BusFiles | None = None,
) -> str:
    from meshbus.bus.connection import BusConnection
    from meshbus.bus.errors import NotReadyError, RequestTimeoutError, UnavailableError
    from meshbus.control.config.client import ConfigClient

    from .manifests import collect

    documents = collect([str(config_dir)])
    bus = BusConnection(bus_auth.operator_settings(nats_url, args.subject_root, bus_files))
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
