"""Per-stage stamps of a REMOTE filter's calls inside a running meshbus-proxy and meshbus-filter-host,
for bench/plugins.py ``--stages`` (bench/remote_filter.py ``--stages`` does the same for the call
alone). Nothing of this is in meshbus: a process started with ``MESHBUS_BENCH_STAGES=<dir>`` has the
stamps patched in at start-up by the bench's sitecustomize (``from_env``), so a run without it costs
nothing.

Stamps (CLOCK_MONOTONIC, one clock for every process on the machine; CLOCK_REALTIME once, to line
them up with h2load's request start times):
- proxy: ``begin`` (the adapter calls RemoteBackend.begin: the request's headers are parsed and the
  chain reached the filter), ``write`` (the call's bytes handed to the socket, at once or as the
  turn ends), ``read`` (nats-py's read loop parsed the reply), ``settled`` (the chain's future
  resolved), ``upstream`` (the request's bytes handed to the upstream socket: the exchange went on
  and its held write was flushed, proxy/adapters/write_batch.py; until h76 this was ``resumed``, a
  ``call_soon`` from ``settled``, which ran after the exchange's done callback but before the
  flush that callback scheduled, so it left out the flush's pass, and with h76's resumption, which
  is not a done callback, it would have meant something else);
- host: ``host_read`` (the call parsed), ``host_handler`` (decoded and run from here), ``host_write``
  (the verdict handed to the socket).
Each process writes ``<dir>/<role>-<pid>.json`` every second. The stamps patch the classes, so they
need the pure build (setup.py compiles remote.py and host.py: a process of the compiled build refuses
``MESHBUS_BENCH_STAGES`` with that said).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "MESHBUS_BENCH_STAGES"


def _dumper(out: Path, marks: dict[str, Any]) -> None:
    def dump() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(marks))
        tmp.replace(out)  # whole: the bench may read it meanwhile
        asyncio.get_running_loop().call_later(1.0, dump)

    asyncio.get_running_loop().call_later(1.0, dump)


def _stamp_writes(nc: Any, marks: list[float], has: bytes) -> None:
    for t, name in ((nc._transport, "writelines"), (nc._transport._io_writer, "write")):
        orig = getattr(t, name)

        def wrapped(data: Any, _orig: Any = orig) -> None:
            chunks = [data] if isinstance(data, (bytes, bytearray)) else data
            k = sum(bytes(c).count(has) for c in chunks)  # one a message: a write may carry several
            if k:
                marks.extend([time.monotonic()] * k)
            _orig(data)

        setattr(t, name, wrapped)


def _stamp_reads(nc: Any, marks: list[float], has: bytes) -> None:
    """Stamp each message with ``has`` in its subject as its bytes reach the connection's reader,
    before any parse (meshbus.bus.direct hands inline subscriptions' messages over without nats-py's
    ``_process_msg``, so a stamp there would see none, and wrapping it would turn that off)."""
    from meshbus.bus.inline import read_inline

    read_inline(nc)  # in place before the wrapper, which it would otherwise take for its own
    reader = nc._transport._io_reader
    feed = reader.feed_data

    def feed_data(data: Any) -> None:
        k = bytes(data).count(has)
        if k:
            marks.extend([time.monotonic()] * k)
        feed(data)

    reader.feed_data = feed_data


def patch_proxy(out_dir: Path) -> None:
    from meshbus.proxy.adapters.write_batch import BatchedTransport
    from meshbus.proxy.filters.plugins.remote import RemoteBackend

    marks: dict[str, Any] = {"clock": [time.monotonic(), time.time()], "begin": [], "write": [], "read": [],
                             "settled": [], "upstream": []}  # fmt: skip
    import meshbus.proxy.filters.plugins.remote as remote_mod
    from meshbus.bus import direct

    orig_begin = RemoteBackend.begin
    orig_write_now = remote_mod.write_now
    marks["taken"] = []  # per call: its time, and 0 written at once, 1 as the turn ends, 2 declined

    def write_now(nc: Any, *a: Any) -> bool:
        deferred = id(nc) in direct._turns or id(nc) in direct._busy
        ok = orig_write_now(nc, *a)
        marks["taken"].append((time.monotonic(), 2 if not ok else 1 if deferred else 0))
        return ok

    remote_mod.write_now = write_now
    patched: set[int] = set()

    def begin(self: Any, hook: str, req: Any, resp: Any, body: bytes, end: bool, then: Any) -> bool:
        marks["begin"].append(time.monotonic())
        bus = self.remotes.bus()
        if id(bus.nc) not in patched:
            patched.add(id(bus.nc))
            _stamp_writes(bus.nc, marks["write"], b".request_headers")
            _stamp_reads(bus.nc, marks["read"], b"_INBOX")
            _dumper(out_dir / f"proxy-{os.getpid()}.json", marks)

        def settled(r: Any, exc: BaseException | None) -> None:
            then(r, exc)
            marks["settled"].append(time.monotonic())

        return orig_begin(self, hook, req, resp, body, end, settled)

    RemoteBackend.begin = begin  # type: ignore[method-assign]
    orig_flush = BatchedTransport.flush

    def flush(self: Any) -> None:  # every request of a remote-noop proxy goes upstream in one write
        if self._held is not None:
            marks["upstream"].append(time.monotonic())
        orig_flush(self)

    BatchedTransport.flush = flush  # type: ignore[method-assign]


def patch_host(out_dir: Path) -> None:
    from meshbus.plugins.remote.host import FilterHost

    marks: dict[str, Any] = {"clock": [time.monotonic(), time.time()], "host_read": [], "host_handler": [],
                             "host_write": []}  # fmt: skip
    orig_start, orig_call = FilterHost.start, FilterHost._call

    async def start(self: Any) -> None:
        await orig_start(self)
        _stamp_reads(self.bus.nc, marks["host_read"], b".request_headers")
        _stamp_writes(self.bus.nc, marks["host_write"], b"PUB _INBOX")
        _dumper(out_dir / f"host-{os.getpid()}.json", marks)

    def call(self: Any, hook: str, data: bytes, headers: Any) -> Any:
        marks["host_handler"].append(time.monotonic())
        return orig_call(self, hook, data, headers)

    FilterHost.start = start  # type: ignore[method-assign]
    FilterHost._call = call  # type: ignore[method-assign]


def from_env() -> None:
    out = os.environ.get(ENV, "")
    if out:
        import meshbus.plugins.remote.host as host_mod
        import meshbus.proxy.filters.plugins.remote as remote_mod

        if not (remote_mod.__file__ or "").endswith(".py") or not (host_mod.__file__ or "").endswith(".py"):
            # the stamps patch RemoteBackend.begin and FilterHost's methods: native classes refuse it
            raise RuntimeError(
                f"{ENV}: the stage stamps need the pure build (MESHBUS_PURE_PYTHON=1 make native)"
            )
        patch_proxy(Path(out))
        patch_host(Path(out))


ORDER = ("begin", "write", "host_read", "host_handler", "host_write", "read", "settled", "upstream")


def report(out_dir: Path, h2load_logs: list[Path]) -> None:
    """Median and p99 between stages (calls lined up by order: at 1,000 req/s one call is in flight
    at a time nearly always; a call whose stamps are out of order is dropped), and h2load's request
    start to ``begin`` and ``upstream`` to its end (each request matched to the nearest ``begin``).
    Only the calls made while h2load ran count: the warm-up before it (wrk, 50 connections) is
    another regime, many calls a turn."""
    import bisect
    import statistics

    from chain_tail import read_h2load  # here: this module is also imported by the bench's processes

    marks: dict[str, list[float]] = {}
    taken: list[tuple[float, int]] = []
    offset = 0.0
    for f in sorted(out_dir.glob("*.json")):
        m = json.loads(f.read_text())
        if f.name.startswith("proxy-"):
            offset = m["clock"][1] - m["clock"][0]
        for k, v in m.items():
            if k == "taken":
                taken.extend((t, kind) for t, kind in v)
            elif k != "clock":
                marks.setdefault(k, []).extend(v)
    requests = [(start, start + took) for start, took in read_h2load(h2load_logs)]
    first = min((s for s, _e in requests), default=0.0) - offset
    kinds = [kind for t, kind in taken if t >= first]
    print(f"  write_now during h2load: at once {kinds.count(0)}, as the turn ends {kinds.count(1)}, "
          f"declined {kinds.count(2)}")  # fmt: skip
    n = min(len(marks.get(k, [])) for k in ORDER)
    if not n:
        print("  stages: no stamps")
        return
    cols = {k: sorted(marks[k])[-n:] for k in ORDER}
    keep = bisect.bisect_left(cols["begin"], first)  # calls before h2load's first request: warm-up
    cols = {k: v[keep:] for k, v in cols.items()}
    n -= keep
    print(f"  stages of {n} calls (median / p99 / mean, us; the means add up, the medians need not):")
    for a, b in itertools.pairwise(ORDER):
        d = [(y - x) * 1e6 for x, y in zip(cols[a], cols[b], strict=True) if 0 <= y - x < 0.05]
        if len(d) > 2:
            q = statistics.quantiles(d, n=100)
            print(
                f"    {a:>12} -> {b:12} {statistics.median(d):8.1f} {q[98]:8.1f} {statistics.fmean(d):8.1f}  ({len(d)})"
            )
    begins = cols["begin"]
    pre, post = [], []
    for start, end in requests:
        start, end = start - offset, end - offset
        i = bisect.bisect_left(begins, start)
        if i < len(begins) and begins[i] - start < 0.003:
            pre.append((begins[i] - start) * 1e6)
            post.append((end - cols["upstream"][i]) * 1e6)
    if pre:
        print(
            f"    h2load start -> begin    {statistics.median(pre):8.1f} {'':8} {statistics.fmean(pre):8.1f}  ({len(pre)})"
        )
        print(
            f"    upstream -> h2load end   {statistics.median(post):8.1f} {'':8} {statistics.fmean(post):8.1f}"
        )


SITECUSTOMIZE = """
try:
    import stages
except ImportError:
    pass
else:
    stages.from_env()
"""
