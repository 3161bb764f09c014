"""Bootstrap configuration of one proxy process: where to listen, limits, logging (not routing).

Routing config is Istio YAML loaded by meshbus.bus.config; this is only what the command line says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from meshbus.bus.config.source import Source


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
    isolate_loader: bool = False  # load YAML in a child interpreter (keeps pydantic out of workers)

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
# The YAML loader and its validation models (pydantic, ruamel) weigh ~18 MB once imported, more than
# the rest of a worker. The route/cluster builders only read attributes, so a worker can load the
# config through a short-lived child (``python -m meshbus.proxy --dump-config PATH``) that validates
# it and hands back plain objects (SimpleNamespace trees) by pickle; the worker never imports them.

REFUSED_EXIT = 3


def plain(obj: Any) -> Any:
    """A pydantic-free copy of a loaded resource tree (attributes kept, models become namespaces)."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        ns = SimpleNamespace(**{name: plain(getattr(obj, name)) for name in type(obj).model_fields})
        # computed attributes (Resource.ref, StringMatch.is_empty, ...) are kept as values
        for klass in type(obj).__mro__:
            if klass is BaseModel or not issubclass(klass, BaseModel):
                continue
            for prop, attr in vars(klass).items():
                if isinstance(attr, property) and not prop.startswith("model_") and not hasattr(ns, prop):
                    setattr(ns, prop, plain(getattr(obj, prop)))
        return ns
    if isinstance(obj, tuple):
        return tuple(plain(x) for x in obj)
    if isinstance(obj, list):
        return [plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    # subclasses of builtins (durations, ports, ...) would import their module when unpickled
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, Source):  # pickles as itself: its module imports nothing heavy
        return Source(str(obj.file), int(obj.line), {tuple(k): int(v) for k, v in obj.field_lines.items()})
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return SimpleNamespace(**{f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj


def dump_config(path: str) -> tuple[int, bytes, str]:
    """Child side: (exit code, pickled (resources, warnings), error text)."""
    from meshbus.bus.config import load_path
    from meshbus.bus.config.fates import standalone_warnings

    result = load_path(path)
    if not result.validation.ok:
        return REFUSED_EXIT, b"", "\n".join(e.render() for e in result.validation.errors)
    warnings = standalone_warnings(result)
    return 0, pickle.dumps(([plain(r) for r in result.resources], warnings)), ""


async def load_isolated(path: str, timeout: float = 60.0) -> tuple[list[Any], list[str]]:
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
    resources, warnings = pickle.loads(out)  # our own child's output, never a file or the network
    return resources, warnings


def load_in_process(path: str) -> tuple[list[Any], list[str]]:
    from meshbus.bus.config import load_path
    from meshbus.bus.config.fates import standalone_warnings

    result = load_path(path)
    if not result.validation.ok:
        raise ConfigRefused("\n".join(e.render() for e in result.validation.errors))
    return list(result.resources), standalone_warnings(result)
