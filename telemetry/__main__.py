"""meshbus-telemetry: mesh-wide metrics for Prometheus, span export, the access-log stream, a live view.

    meshbus-telemetry [--nats URL] [--metrics-port 15090] [--host 0.0.0.0] [--grace 30s]
                      [--otlp-endpoint http://collector:4318/v1/traces] [--spans-file spans.jsonl]
                      [--logs-max-bytes 256MiB] [--logs-max-age 24h]

Run as many replicas as you like against one NATS: proxies' batches are shared among them (a queue
group); point Prometheus at every replica (their series add up) and ``meshctl top`` asks them all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError
from meshbus.bus.process import add_common_args, run_until_signalled, settings_from_args, use_uvloop
from meshbus.telemetry.collector.service import (
    DEFAULT_PORT,
    DEFAULT_SPANS_FILE,
    CollectorConfig,
    TelemetryService,
)
from meshbus.telemetry.logging import configure_logging

log = logging.getLogger("meshbus.telemetry")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {
    "": 1,
    "B": 1,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}


def duration(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``24h``, ``7d`` -> seconds."""
    t = text.strip()
    try:
        if t and t[-1] in _UNITS:
            return float(t[:-1]) * _UNITS[t[-1]]
        return float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 30s, 5m, 24h)") from None


def size(text: str) -> int:
    """``1048576``, ``256MiB``, ``1GB`` -> bytes."""
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    try:
        return int(float(num) * _SIZES[t[len(num) :]])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use 256MiB, 1GB)") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshbus-telemetry", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--host", default="0.0.0.0", help="address of the HTTP port (/metrics, the web view)")
    p.add_argument("--metrics-port", type=int, default=DEFAULT_PORT, help="HTTP port (0: any free port)")
    p.add_argument("--grace", type=duration, default=30.0, help="forget a proxy silent this long (30s)")
    p.add_argument(
        "--otlp-endpoint",
        default="",
        help="export spans by OTLP/HTTP here (default: the MeshConfig's opentelemetry provider, else --spans-file)",
    )
    p.add_argument(
        "--spans-file", default=DEFAULT_SPANS_FILE, help="JSON-lines span file when no OTLP endpoint is set"
    )
    p.add_argument(
        "--logs-max-bytes", type=size, default=256 << 20, help="access-log stream size limit (256MiB)"
    )
    p.add_argument("--logs-max-age", type=duration, default=86400.0, help="access-log stream age limit (24h)")
    return p


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    config = CollectorConfig(
        host=args.host,
        port=args.metrics_port,
        grace=args.grace,
        otlp_endpoint=args.otlp_endpoint,
        spans_file=args.spans_file,
        logs_max_bytes=args.logs_max_bytes,
        logs_max_age=args.logs_max_age,
    )
    async with (
        BusConnection(settings_from_args(args, "meshbus-telemetry", role="telemetry")) as bus,
        TelemetryService(bus, config) as service,
    ):
        log.info(
            "meshbus-telemetry ready: http://%s:%d/ (instance %s)",
            args.host,
            service.port,
            service.base.instance_id,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging("telemetry", args.log_level, args.log_format)
    use_uvloop()
    try:
        asyncio.run(run_until_signalled(lambda stop: serve(args, stop)))
    except BusError as exc:
        print(f"meshbus-telemetry: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"meshbus-telemetry: cannot listen: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
