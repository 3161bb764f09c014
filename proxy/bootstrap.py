"""Bootstrap configuration of one proxy process: where to listen, limits, logging (not routing).

Routing config is Istio YAML loaded by meshbus.bus.config; this is only what the command line says.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshbus.bus.config.proxy_kinds import Resource


class BootstrapError(ValueError):
    """A command-line value the proxy cannot use."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> Address:
    """``HOST:PORT``, ``:PORT`` or ``PORT``; ``[v6]:PORT`` for IPv6."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise BootstrapError(f"meshbus: bad address {text!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise BootstrapError(f"meshbus: bad address {text!r}: port out of range")
    return Address(host, number)


@dataclass(frozen=True, slots=True)
class BootstrapConfig:
    config_path: str
    outbound: Address | None = Address("127.0.0.1", 15001)
    inbound: Address | None = Address("0.0.0.0", 15006)
    admin: Address | None = Address("127.0.0.1", 15000)
    app_port: int | None = None
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)  # this workload's; VirtualService sourceLabels
    workers: int = 1
    max_header_bytes: int = 60 * 1024
    header_timeout: float = 10.0  # seconds to receive a complete request head (slowloris guard)
    idle_timeout: float = 300.0  # keep-alive connection with no request in flight
    drain_timeout: float = 10.0  # grace for in-flight requests on SIGTERM
    reload_interval: float = 1.0  # config file poll period
    log_level: str = "info"
    log_format: str = "console"
    access_log: str | None = None  # path, "-" for stdout, None for off
    access_log_format: str = "json"
    reuse_port: bool = False
    isolate_loader: bool = False  # load YAML in a child interpreter (keeps the YAML loader out of workers)
    nats: str | None = None  # NATS URL(s) for REMOTE Plugins on a standalone proxy (None: $MESHBUS_NATS_URL)
    subject_root: str = "mesh"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BootstrapError("meshbus: --workers must be at least 1")
        if self.max_header_bytes < 1024:
            raise BootstrapError("meshbus: --max-header-bytes must be at least 1024")
        if self.header_timeout <= 0 or self.drain_timeout < 0 or self.idle_timeout <= 0:
            raise BootstrapError("meshbus: timeouts must be positive")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ConfigRefused(Exception):
    """The config on disk is invalid; the message lists every error (file, resource, field)."""


# ---- config loading in a child interpreter ---------------------------------------------------------------
# The YAML loader (ruamel, which keeps line numbers) and the semantic validators stay out of the
# workers: a short-lived child (``python -m meshbus.proxy --dump-config PATH``) loads and validates
# the config and hands the worker the validated models themselves, pickled. They are the one typed
# form the builders take (frozen pydantic models of meshbus.bus.config, as a snapshot also yields):
# unpickling restores their fields without validating again (the child did), so a worker pays
# pydantic's import (the models are built lazily: ``defer_build``) but no second validation.

REFUSED_EXIT = 3


def dump_config(path: str) -> tuple[int, bytes, str]:
    """Child side: (exit code, pickled (resources, warnings), error text)."""
    from meshbus.bus.config import load_path
    from meshbus.bus.config.fates import standalone_warnings

    result = load_path(path)
    if not result.validation.ok:
        return REFUSED_EXIT, b"", "\n".join(e.render() for e in result.validation.errors)
    warnings = standalone_warnings(result)
    return 0, pickle.dumps((list(result.resources), warnings)), ""


async def load_isolated(path: str, timeout: float = 60.0) -> tuple[list[Resource], list[str]]:
    """Worker side: run the loader in a child interpreter; raises ConfigRefused with its errors."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshbus.proxy", "--dump-config", path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConfigRefused(f"meshbus: config loader for {path} did not finish in {timeout}s") from None
    if proc.returncode == REFUSED_EXIT:
        raise ConfigRefused(err.decode(errors="replace").strip())
    if proc.returncode != 0:
        raise ConfigRefused(
            f"meshbus: config loader failed ({proc.returncode}): {err.decode(errors='replace')}"
        )
    # our own child's output, never a file or the network
    resources: list[Resource]
    warnings: list[str]
    resources, warnings = pickle.loads(out)
    return resources, warnings


def load_in_process(path: str) -> tuple[list[Resource], list[str]]:
    from meshbus.bus.config import load_path
    from meshbus.bus.config.fates import standalone_warnings

    result = load_path(path)
    if not result.validation.ok:
        raise ConfigRefused("\n".join(e.render() for e in result.validation.errors))
    return list(result.resources), standalone_warnings(result)
