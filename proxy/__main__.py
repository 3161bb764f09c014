"""``meshbus-proxy``: the data-plane proxy, standalone from Istio YAML or in mesh mode.

    meshbus-proxy --config FILE_OR_DIR [--outbound 127.0.0.1:15001] [--inbound 0.0.0.0:15006]
                  [--admin 127.0.0.1:15000] [--app-port P] [--namespace default] [--workers N] ...
    meshbus-proxy --nats URL --service reviews --labels version=v1 --app-port 9080 [--token T] ...

Listen addresses follow Istio's sidecar: the inbound listener is on 0.0.0.0 because peers on other
hosts reach it (it is the address a workload registers, ``--advertise``); the outbound listener
serves the local app only and the admin port exposes mutations (/healthcheck/fail, /reload), so
both stay on 127.0.0.1 (Istio's admin is localhost-only too). Set any of them explicitly to change it.

Mesh mode (``--service``) takes its routes from meshbus-discovery (proxy/mesh/mode.py); it runs one
worker (the agent owns the one snapshot stream), so ``--workers`` above 1 is refused there.

``--workers N`` forks N worker processes that share the listening ports with SO_REUSEPORT; the
parent only forwards SIGTERM/SIGINT/SIGHUP to them and waits. Worker 0 also serves the admin port.
This is the only module that exits the process.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from meshbus.bus.child_process import die_with_parent
from meshbus.bus.process import add_common_args
from meshbus.proxy.bootstrap import (
    Address,
    BootstrapConfig,
    BootstrapError,
    ConfigRefused,
    default_workers,
    dump_config,
    parse_address,
)

if TYPE_CHECKING:
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.mesh.mode import MeshMode

log = logging.getLogger("meshbus.proxy")

# glibc mallopt parameters: without these, glibc's heap trimming can double CPU per request with
# page faults on some process starts (bench anchors). Workers inherit the setting through fork.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_malloc() -> None:
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(32 * 1024 * 1024))
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1024 * 1024))
    try:
        # the process's own symbols, as bus/process.py's malloc_trim does: ctypes.util.find_library
        # would import ctypes.util and tempfile into every worker just to name libc
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))
        libc.mallopt(_M_MMAP_THRESHOLD, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))
    except (OSError, AttributeError, ValueError):
        pass  # not glibc: nothing to tune


def _address_or_none(text: str) -> Address | None:
    return None if text.lower() in ("", "off", "none") else parse_address(text)


def build_parser() -> argparse.ArgumentParser:
    from meshbus.proxy.mesh.agent_args import add_agent_args, add_bus_auth_args

    p = argparse.ArgumentParser(
        prog="meshbus-proxy",
        description=__doc__.split("\n\n")[0],
        epilog="Listen addresses: inbound on 0.0.0.0 because peers on other hosts connect to it;"
        " outbound (the local app's way out) and admin (it can fail health checks and reload config)"
        " on 127.0.0.1, reachable from this host only, as in an Istio sidecar.",
    )
    add_common_args(p)
    p.add_argument("--config", default=None, help="Istio YAML file or directory (watched; SIGHUP reloads)")
    p.add_argument(
        "--outbound",
        default="127.0.0.1:15001",
        help="outbound listener (local app -> mesh; local only); 'off'",
    )
    p.add_argument(
        "--inbound",
        default="0.0.0.0:15006",
        help="inbound listener (mesh -> app; peers on other hosts); 'off'",
    )
    p.add_argument(
        "--admin", default="127.0.0.1:15000", help="admin listener (local only: it has mutations); 'off'"
    )
    p.add_argument("--app-port", type=int, default=None, help="local application port (inbound target)")
    p.add_argument("--namespace", default="default", help="namespace of short host names")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    p.add_argument("--max-header-bytes", type=int, default=60 * 1024, help="request head limit (431 above)")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds to receive a request head")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="idle keep-alive connection timeout")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="SIGTERM grace for in-flight requests")
    p.add_argument("--access-log", default=None, help="access log file, or - for stdout (default: off)")
    p.add_argument("--access-log-format", default="json", choices=["json", "text"])
    p.add_argument(
        "--in-process-config",
        action="store_true",
        help="load YAML in the worker itself (default: a child process, so workers stay small)",
    )
    add_agent_args(p)
    g = p.add_argument_group("mesh identity (certificate from meshbus-ca)")
    g.add_argument(
        "--token",
        default=None,
        help="bootstrap token, needed once: with --state-dir a restart renews with the kept certificate"
        " (default: $MESHBUS_TOKEN; none and no kept certificate: no mTLS)",
    )
    g.add_argument("--trust-domain", default="cluster.local", help="SPIFFE trust domain")
    add_bus_auth_args(g)
    return p


def parse_command_line(argv: list[str] | None = None) -> tuple[BootstrapConfig, argparse.Namespace]:
    a = build_parser().parse_args(argv)
    mesh = bool(a.service)
    if mesh == bool(a.config):
        raise BootstrapError("meshbus: give --config FILE_OR_DIR (standalone) or --service NAME (mesh mode)")
    if mesh and a.workers > 1:
        raise BootstrapError(
            "meshbus: mesh mode runs one worker (one agent, one snapshot stream); drop --workers or use 1"
        )
    workers = 1 if mesh else (a.workers or default_workers())
    if a.app_health and not mesh:
        raise BootstrapError(
            "meshbus: --app-health is a mesh-mode flag (it reports to discovery): add --service"
        )
    if mesh:
        from meshbus.proxy.mesh.probe import probe_from_args

        probe_from_args(a)  # a bad probe is refused here, before anything listens
    from meshbus.proxy.mesh.agent_args import parse_labels

    try:
        labels = parse_labels(a.labels)
    except ValueError as exc:
        raise BootstrapError(str(exc)) from None
    cfg = BootstrapConfig(
        config_path=a.config or "",
        outbound=_address_or_none(a.outbound),
        inbound=_address_or_none(a.inbound),
        admin=_address_or_none(a.admin),
        app_port=a.app_port,
        namespace=a.namespace,
        labels=labels,
        workers=workers,
        max_header_bytes=a.max_header_bytes,
        header_timeout=a.header_timeout,
        idle_timeout=a.idle_timeout,
        drain_timeout=a.drain_timeout,
        log_level=a.log_level,
        log_format=a.log_format,
        access_log=a.access_log,
        access_log_format=a.access_log_format,
        reuse_port=workers > 1,
        isolate_loader=not a.in_process_config,
        nats=a.nats,
        subject_root=a.subject_root,
    )
    return cfg, a


def parse_args(argv: list[str] | None = None) -> BootstrapConfig:
    return parse_command_line(argv)[0]


def _configure_logging(cfg: BootstrapConfig) -> None:
    # structlog imports rich (and pygments) for pretty tracebacks when it can: ~4 MB per
    # worker that a proxy never uses (rich is there for meshctl's tables). Hide it from this process.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from meshbus.telemetry.logging import configure_logging

    configure_logging("proxy", level=cfg.log_level, fmt="json" if cfg.log_format == "json" else "console")


def _mesh_mode(server: ProxyServer, args: argparse.Namespace) -> MeshMode:
    from meshbus.bus.process import settings_from_args
    from meshbus.proxy.mesh.agent import agent_settings_from_args
    from meshbus.proxy.mesh.bus_auth import bus_auth_from_args
    from meshbus.proxy.mesh.identity import resolve_token
    from meshbus.proxy.mesh.mode import IdentitySettings, MeshMode
    from meshbus.proxy.mesh.probe import probe_from_args
    from meshbus.proxy.mesh.state_dir import has_identity

    settings = agent_settings_from_args(args, inbound_port=server.ports.get("inbound", 0))
    token = resolve_token(args.token)
    # a sidecar that kept its certificate asks for its identity again, with or without a token
    wanted = bool(token) or has_identity(args.state_dir)
    auth = bus_auth_from_args(args)
    identity = IdentitySettings(token, args.trust_domain, args.state_dir, auth) if wanted or auth else None
    bus = settings_from_args(args, f"meshbus-proxy {args.service}")
    mesh = MeshMode(server, bus, settings, identity, probe_from_args(args))
    mesh.start()
    log.info("mesh mode: node %s, NATS %s", mesh.node_id, mesh.bus.settings.url)
    return mesh


async def _run_worker(cfg: BootstrapConfig, worker: int, args: argparse.Namespace | None = None) -> int:
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.build.runtime import RuntimeBuildError

    server = ProxyServer(cfg, worker=worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # a stop asked for while still loading the config is honoured as soon as start() returns
        loop.add_signal_handler(sig, server.request_shutdown)
    try:
        await server.start()
    except (ConfigRefused, RuntimeBuildError) as exc:
        log.error("meshbus: cannot start, config refused:\n%s", exc)
        await server.shutdown(0)
        return 2
    except OSError as exc:
        log.error("meshbus: cannot listen: %s", exc)
        await server.shutdown(0)
        return 1
    mesh = _mesh_mode(server, args) if args is not None and args.service else None
    try:
        await server.serve_until_stopped()
    finally:
        if mesh is not None:
            await mesh.stop()
    return 0


def _worker_main(cfg: BootstrapConfig, worker: int, args: argparse.Namespace | None = None) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run_worker(cfg, worker, args))
    return uvloop.run(_run_worker(cfg, worker, args))


def _supervise(cfg: BootstrapConfig) -> int:
    children: list[int] = []
    # A worker must not outlive a parent that was SIGKILLed (it would hold the ports). Made before
    # the fork: it checks, in the child, that its parent is still this process.
    die_with_us = die_with_parent()
    for i in range(cfg.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if die_with_us is not None:
                    die_with_us()
                code = _worker_main(cfg, i)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    worst = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, 128 - code if code < 0 else code)  # killed by signal N -> 128+N, as a shell says
    return worst


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--dump-config"] and len(args) == 2:
        # child interpreter of a worker: validate the YAML and hand back the models (bootstrap.load_isolated)
        code, data, err = dump_config(args[1])
        if err:
            print(err, file=sys.stderr)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        sys.exit(code)
    try:
        cfg, ns = parse_command_line(argv)
    except (BootstrapError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    _tune_malloc()
    _configure_logging(cfg)
    if cfg.workers == 1:
        sys.exit(_worker_main(cfg, 0, ns))
    sys.exit(_supervise(cfg))


if __name__ == "__main__":
    main()
