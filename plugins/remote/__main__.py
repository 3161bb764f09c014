"""meshbus-filter-host: serve one filter on the bus for Plugins with ``placement: REMOTE``.

    meshbus-filter-host --nats URL --filter NAME [--concurrency N] [--hook-timeout S]

``NAME`` is an installed filter (the ``meshbus.filters`` entry-point group) or ``module:Class``.
Run several hosts of one filter to share its load (they form a NATS queue group). Only this module
exits the process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys

from meshbus.bus.connection import BusConnection
from meshbus.bus.process import (
    add_common_args,
    log_level_number,
    quiet_gc,
    run_until_signalled,
    settings_from_args,
    use_uvloop,
)
from meshbus.plugins.api import check_filter_class
from meshbus.plugins.registry import NAME, FilterInfo, PluginLoadError, info_of, load
from meshbus.plugins.remote.host import FilterHost


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshbus-filter-host", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--filter", required=True, help="installed filter name, or module:Class")
    p.add_argument("--name", default=None, help="the name proxies call it by (default: the filter's name)")
    p.add_argument("--concurrency", type=int, default=16, help="async hook calls served at once (default 16)")
    p.add_argument("--hook-timeout", type=float, default=30.0, help="longest a hook may run here (s)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds to finish calls on shutdown")
    return p


def resolve(spec: str, name: str | None) -> FilterInfo:
    """An installed filter by name, or a class by ``module:Class``."""
    if ":" not in spec:
        return load(spec)
    module, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(f"meshbus: cannot load {spec!r}: {exc}") from None
    try:
        cls = check_filter_class(obj, spec)
    except TypeError as exc:
        raise PluginLoadError(str(exc)) from None
    fname = name or attr.lower()
    if not NAME.match(fname):
        raise PluginLoadError(
            f"meshbus: {fname!r} is not a filter name (lowercase, digits, '-', '_', '.'); use --name"
        )
    return info_of(fname, cls, module.partition(".")[0])


async def serve(args: argparse.Namespace, info: FilterInfo, stop: asyncio.Event) -> None:
    async with BusConnection(
        settings_from_args(args, f"meshbus-filter-host {info.name}", role="filter-host")
    ) as bus:
        async with FilterHost(bus, info, concurrency=args.concurrency, hook_timeout=args.hook_timeout):
            quiet_gc()  # a full GC pass is a stall of every call in flight: see quiet_gc
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        print("meshbus-filter-host: --concurrency must be at least 1", file=sys.stderr)
        sys.exit(2)
    try:
        info = resolve(args.filter, args.name)
    except PluginLoadError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    if args.name and ":" not in args.filter:
        info = info_of(args.name, info.cls, info.package, info.version)
    # Plain stdlib logging: the plugins package depends on bus/ only (tests/test_imports.py), and a
    # filter author's process should not need meshbus's telemetry to log.
    logging.basicConfig(
        level=log_level_number(args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    use_uvloop()
    asyncio.run(run_until_signalled(lambda stop: serve(args, info, stop), grace=args.grace))
    sys.exit(0)


if __name__ == "__main__":
    main()
