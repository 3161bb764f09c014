"""meshctl logs / top: the mesh's access logs and live traffic, from meshbus-telemetry.

    meshctl logs [--service S] [--status 5xx] [--since 5m] [--follow] [-o text|json]
    meshctl top [--window 10s] [--once] [-o table|json]

``logs`` reads the access-log stream (JetStream, kept by meshbus-telemetry with size and age limits):
every proxy's records, oldest first, ``--since`` back (default: all that is kept); ``--follow`` goes
on with new ones until Ctrl-C. ``--service`` keeps the records of that service's proxies (both the
client side of its calls and the server side of calls to it); ``--status`` takes codes and classes
(``500``, ``5xx``, ``4xx,503``).

``top`` is ``linkerd viz stat``'s view: per service and per workload, requests per second, success
rate, p50/p90/p99 and the share of requests over mTLS, over the last ``--window``; refreshed every
second until Ctrl-C, or printed once with ``--once`` (``-o json`` for scripts). It asks every
meshbus-telemetry replica and adds their answers up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import api
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.telemetry import AccessLogBatch, unpack_rows
from meshbus.telemetry.accesslog import AccessLogRecord, to_json_dict
from meshbus.telemetry.collector.gather import gather_stats
from meshbus.telemetry.collector.views import top_rows

from .bus_call import open_bus, timeout_args


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 30s, 5m, 2h)") from None


def status_filter(spec: str | None) -> Callable[[int], bool]:
    """``5xx``, ``404``, ``4xx,503`` -> a predicate on response codes (None: every code)."""
    if not spec:
        return lambda _code: True
    exact: set[int] = set()
    classes: set[int] = set()
    for part in spec.split(","):
        p = part.strip().lower()
        if len(p) == 3 and p.endswith("xx") and p[0].isascii() and p[0].isdigit():
            classes.add(int(p[0]))
        elif p.isascii() and p.isdigit():
            exact.add(int(p))
        else:
            raise argparse.ArgumentTypeError(f"bad --status {part!r}: use 500, 5xx or 4xx,503")
    return lambda code: code in exact or code // 100 in classes


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "logs",
        parents=[common, timeout_args(3.0, "NATS")],
        help="access logs of the mesh (from meshbus-telemetry's stream)",
    )
    p.add_argument("--service", default=None, help="only the proxies of this service")
    p.add_argument("--status", default=None, help="only these response codes: 500, 5xx, 4xx,503")
    p.add_argument("--since", type=_duration, default=None, help="only records younger than this (5m, 1h)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records until Ctrl-C")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=run_logs)

    p = sub.add_parser(
        "top",
        parents=[common, timeout_args(1.0, "meshbus-telemetry")],
        help="live traffic per service and workload",
    )
    p.add_argument("--window", type=_duration, default=10.0, help="rates over this window (default 10s)")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=run_top)


# -- logs ---------------------------------------------------------------------------------------------
def _text(rec: dict[str, Any]) -> str:
    dur = rec.get("duration")
    return (
        f"{rec.get('start_time')} {rec.get('workload') or rec.get('node')} {rec.get('direction') or '-'} "
        f"{rec.get('method')} {rec.get('authority') or ''}{rec.get('path')} {rec.get('response_code')} "
        f"{rec.get('response_flags')} {dur if dur is not None else '-'}ms "
        f"{rec.get('upstream_host') or '-'} peer={rec.get('downstream_peer_principal') or '-'} "
        f"trace={rec.get('trace_id') or '-'} id={rec.get('request_id') or '-'}"
        + "".join(f" {k}={v}" for k, v in (rec.get("metadata") or {}).items())
    )


_KNOWN = {f.name for f in dataclasses.fields(AccessLogRecord)}


def records_of(batch: AccessLogBatch) -> list[dict[str, Any]]:
    """A batch's rows under Istio's JSON access-log keys (as the proxy's --access-log file has them)."""
    out = []
    for row in unpack_rows(batch.records, batch.encoding, batch.doubles):
        named = dict(zip(batch.fields, row, strict=False))  # fields of a newer proxy: dropped
        try:
            rec = AccessLogRecord(**{k: v for k, v in named.items() if k in _KNOWN})
        except TypeError:
            continue
        out.append(to_json_dict(rec))
    return out


def run_logs(args: argparse.Namespace) -> int:
    try:
        keep = status_filter(args.status)
    except argparse.ArgumentTypeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    since = datetime.now(UTC) - timedelta(seconds=args.since) if args.since else None
    out = sys.stdout

    def emit(batch: AccessLogBatch) -> None:
        src = batch.source
        if args.service and args.service not in (src.service, src.workload):
            return
        for rec in records_of(batch):
            if not keep(int(rec.get("response_code") or 0)):
                continue
            rec = {
                **rec,
                "node": src.node,
                "service": src.service,
                "namespace": src.namespace,
                "workload": src.workload,
            }
            out.write((json.dumps(rec) if args.output == "json" else _text(rec)) + "\n")
        out.flush()

    try:
        return asyncio.run(_read_logs(args, since, emit))
    except KeyboardInterrupt:
        return 130


async def _read_logs(
    args: argparse.Namespace, since: datetime | None, emit: Callable[[AccessLogBatch], None]
) -> int:
    bus = await open_bus(args)
    try:
        return await read_stream(bus, since, emit, follow=args.follow, timeout=args.timeout)
    finally:
        await bus.close(drain=False)


async def read_stream(
    bus: BusConnection,
    since: datetime | None,
    emit: Callable[[AccessLogBatch], None],
    *,
    follow: bool = False,
    timeout: float = 3.0,
) -> int:
    """Every batch of the access-log stream from ``since`` (or its start) to ``emit``; with
    ``follow``, new ones too until cancelled."""
    subj = bus.subjects
    js = bus.nc.jetstream()
    stream = subj.access_log_stream()
    try:
        info = await js.stream_info(stream)
    except Exception:
        raise UnavailableError(
            f"no access-log stream {stream}: is meshbus-telemetry running against this NATS?"
        ) from None
    if not follow and info.state.messages == 0:
        return 0
    policy = api.DeliverPolicy.BY_START_TIME if since is not None else api.DeliverPolicy.ALL
    sub = await js.subscribe(
        subj.telemetry_all("logs"),
        stream=stream,
        ordered_consumer=True,
        deliver_policy=policy,
        config=api.ConsumerConfig(opt_start_time=since),
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if follow else timeout)
            except TimeoutError:
                return 0  # nothing newer arrived: what was kept has been read
            try:
                emit(codec.decode(msg.data, msg.headers, AccessLogBatch, max_bytes=bus.settings.max_payload))
            except Exception as exc:  # e.g. a newer proxy's row encoding: skip the batch, never silently
                print(f"meshctl logs: skipped a batch of {msg.subject}: {exc}", file=sys.stderr)
            if not follow and msg.metadata.num_pending == 0:
                return 0
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


# -- top ----------------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}ms" if v >= 10 else f"{v:.1f}ms"


def tables(doc: dict[str, Any]) -> Group:
    out = []
    for title, key in (("SERVICE", "services"), ("WORKLOAD", "workloads")):
        t = Table(
            title=f"{key} (last {doc['window_s']:g}s)", title_justify="left", box=None, header_style="bold"
        )
        for col in (title, "NAMESPACE", "RPS", "SUCCESS", "P50", "P90", "P99", "MTLS"):
            t.add_column(col, justify="left" if col in (title, "NAMESPACE") else "right")
        for r in doc[key]:
            t.add_row(
                r["name"], r["namespace"], f"{r['rps']:.2f}", _pct(r["success_rate"]),
                _ms(r["p50_ms"]), _ms(r["p90_ms"]), _ms(r["p99_ms"]), _pct(r["mtls_share"]),
            )  # fmt: skip
        out.append(t)
    return Group(*out)


async def top_doc(bus: BusConnection, window: float, timeout: float) -> dict[str, Any]:
    m = await gather_stats(bus, window, timeout=timeout)
    return {"window_s": window, "replicas": m.replicas, "proxies": m.proxies, **top_rows(m)}


def run_top(args: argparse.Namespace) -> int:
    console = Console()

    async def once(bus: BusConnection) -> dict[str, Any]:
        return await top_doc(bus, args.window, min(args.timeout, 1.0))

    async def go() -> int:
        bus = await open_bus(args)
        try:
            if args.once:
                doc = await once(bus)
                if args.output == "json":
                    print(json.dumps(doc, indent=2))
                else:
                    console.print(tables(doc))
                return 0
            with Live(console=console, refresh_per_second=2, screen=False) as live:
                while True:
                    started = time.monotonic()
                    try:
                        live.update(tables(await once(bus)))
                    except UnavailableError as exc:
                        live.update(f"[red]{exc}[/red]")
                    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        finally:
            await bus.close(drain=False)

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130
