"""What every meshbus process's __main__ shares: common flags and the run loop.

`add_common_args` gives every process and meshctl command ``--nats``, its credentials
(``--nats-cert``/``--nats-key``/``--nats-ca``, ``--nats-nkey``, ``--nats-creds``), ``--log-level``,
``--log-format`` and ``--subject-root``. `run_until_signalled` runs a component's
``serve`` coroutine until SIGTERM/SIGINT, then drains within a grace period, cancels
what is left and logs how many tasks it had to cancel (uvicorn's shutdown shape).
The previous signal handlers are restored afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .cert_flags import add_cert_args
from .subjects import DEFAULT_ROOT

if TYPE_CHECKING:
    from .connection import BusSettings

# Kept here rather than imported from .connection: a standalone proxy worker parses
# these flags too, and must not pay for importing nats-py (memory per worker).
ENV_URL = "MESHBUS_NATS_URL"
ENV_CERT, ENV_KEY, ENV_CA = "MESHBUS_NATS_CERT", "MESHBUS_NATS_KEY", "MESHBUS_NATS_CA"  # as .connection's

log = logging.getLogger(__name__)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats",
        default=None,
        metavar="URL",
        help=f"NATS URL(s), comma separated (default: ${ENV_URL} or nats://127.0.0.1:4222); a user and "
        "password come from $MESHBUS_NATS_USER and $MESHBUS_NATS_PASSWORD",
    )
    parser.add_argument("--nats-creds", default=None, metavar="FILE", help="NATS credentials file")
    add_cert_args(
        parser,
        "nats",
        (ENV_CERT, ENV_KEY),
        "client certificate (PEM chain) to present over TLS (`meshctl up` writes one per role: a secured "
        "bus maps it to the role's user)",
    )
    parser.add_argument(
        "--nats-ca",
        default=os.environ.get(ENV_CA) or None,
        metavar="FILE",
        help=f"CA the NATS server's certificate is checked against (default: ${ENV_CA}; the mesh root "
        "with `meshctl up`). meshbus-proxy with --state-dir and no --nats-cert presents its workload "
        "certificate instead",
    )
    parser.add_argument(
        "--nats-nkey",
        default=None,
        metavar="FILE",
        help="nkey seed file to authenticate with, for a NATS meshbus does not configure (default: "
        "$MESHBUS_NATS_NKEY)",
    )
    parser.add_argument("--subject-root", default=os.environ.get("MESHBUS_SUBJECT_ROOT", DEFAULT_ROOT))
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MESHBUS_LOG_LEVEL", "info"),
        choices=["trace", "debug", "info", "warning", "error"],
    )
    parser.add_argument(
        "--log-format", default=os.environ.get("MESHBUS_LOG_FORMAT", "console"), choices=["json", "console"]
    )


def settings_from_args(args: argparse.Namespace, name: str, *, role: str | None = None) -> BusSettings:
    """Settings from the common flags; ``role`` (a component's, `meshbus.bus.roles`) names its inbox."""
    from .connection import BusSettings, default_url
    from .subjects import inbox_prefix

    settings = BusSettings(
        url=args.nats or default_url(),
        name=name,
        root=args.subject_root,
        credentials_file=args.nats_creds,
        inbox_prefix=inbox_prefix("role", role) if role else None,
    )
    if getattr(args, "nats_nkey", None):
        settings = dataclasses.replace(settings, nkey_seed_file=args.nats_nkey)
    for flag, attr in (("nats_cert", "tls_cert"), ("nats_key", "tls_key"), ("nats_ca", "tls_ca")):
        if getattr(args, flag, None):
            settings = dataclasses.replace(settings, **{attr: getattr(args, flag)})
    return settings


async def run_until_signalled(
    serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    grace: float = 10.0,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run ``serve(stop_event)``; the first signal sets the event, a second one forces exit.

    ``serve`` must return once the event is set and it has drained. After ``grace`` seconds
    it is cancelled, as is every other task still running.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    previous = {s: signal.getsignal(s) for s in signals}
    forced = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without waiting", sig.name)
            forced.set()
            return
        log.info("received %s: draining", sig.name)
        stop.set()

    for s in signals:
        loop.add_signal_handler(s, on_signal, s)
    task = asyncio.create_task(serve(stop))
    try:
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            forced_wait = asyncio.create_task(forced.wait())
            done, _ = await asyncio.wait(
                [task, forced_wait], timeout=grace, return_when=asyncio.FIRST_COMPLETED
            )
            forced_wait.cancel()
            if task not in done:
                log.warning("shutdown grace of %.1fs exceeded; cancelling", grace)
                task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    finally:
        for s in signals:
            loop.remove_signal_handler(s)
            prev = previous[s]
            if callable(prev) or prev in (signal.SIG_DFL, signal.SIG_IGN):
                signal.signal(s, prev)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        for t in others:
            t.cancel()
        if others:
            await asyncio.gather(*others, return_exceptions=True)
            log.info("cancelled %d leftover task(s) at shutdown", len(others))


def quiet_gc() -> None:
    """Keep the cyclic GC off a latency-bound process's requests once it has started (the proxy and
    meshbus-filter-host). Requests and calls free their objects by refcount, but each allocates
    enough containers to trigger young-generation passes, and every full pass would walk all that is
    loaded (imports, pydantic models, compiled routes): freezing moves what exists now out of the
    collector's sight, and a higher gen0 threshold makes passes rare."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def release_free_heap() -> None:
    """Hand the OS back the heap pages nothing uses now, once (glibc's ``malloc_trim``): a proxy
    sets a 32 MB trim threshold (proxy/__main__.py) so that its requests never trim, and so keeps
    whatever start-up or a config swap freed (import-time garbage, the config loader's output, the
    old runtime): ~1.1 MB of an idle worker (bench/run.py's 100 services). Pages taken back are
    faulted in again once, when the heap grows into them. No-op without glibc."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def use_uvloop() -> None:
    """Install uvloop as the event loop policy when it is available (it is a dependency)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency, but stay runnable
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def log_level_number(name: str) -> int:
    return 5 if name == "trace" else getattr(logging, name.upper())
