"""Instructions per remote filter call spent encoding and decoding it (plugins/remote/wire.py), no I/O.

    .venv/bin/python bench/remote_wire.py [--stage pack|call_in|unpack|all] [--headers 4|10]

Each stage runs under valgrind's callgrind twice, N and N + 2000 times in one process (GC off, as
the proxy and the host run nearly without it: bus/process.py ``quiet_gc``); the difference / 2000 is
the stage's instructions per call, start-up and imports left out. Stages:
- ``pack``: the proxy's ``pack_call`` of bench/remote_filter.py's request (its peers kept, as the
  proxy keeps one per principal or service host);
- ``call_in``: the host's read of that call into the views its hook sees;
- ``unpack``: ``msgpack.unpackb`` of the same bytes alone (how much of ``call_in`` is msgpack).

bench/remote_filter.py --stages and bench/stages.py measure the whole round trip; this isolates the
message format (what a change to it saves on each side, deterministically). Needs valgrind.
"""

from __future__ import annotations

import argparse
import gc
import re
import subprocess
import sys
import tempfile

import msgpack

from meshbus.plugins.http import Headers, Peer, Request
from meshbus.plugins.remote.wire import call_in, config_digest, pack_call

HEADERS = [
    ("host", "origin"), ("user-agent", "h2load nghttp2/1.52.0"), ("accept", "*/*"),
    ("x-request-id", "6f1c0a8e-6f1c-4a8e-9f1c-0a8e6f1c0a8e"),
]  # fmt: skip
MORE_HEADERS = [
    ("x-forwarded-proto", "http"), ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"), ("x-b3-sampled", "1"), ("x-envoy-attempt-count", "1"),
    ("content-length", "0"),
]  # fmt: skip
STAGES = ("pack", "call_in", "unpack")
SOURCE, DESTINATION = Peer(), Peer(service="origin")
DIGEST = config_digest(None)


def request(headers: list[tuple[str, str]]) -> Request:
    return Request(
        "GET", "/", "origin", Headers(list(headers)), request_id="6f1c0a8e", route="default",
        source=SOURCE, destination=DESTINATION,
    )  # fmt: skip


def loop(stage: str, n: int, headers: list[tuple[str, str]]) -> None:
    """The counted part: ``n`` times ``stage``, of one request (``pack_call`` only reads it)."""
    gc.disable()
    req = request(headers)
    data = pack_call("request_headers", req, plugin="default/bench", digest=DIGEST)
    if stage == "pack":
        for _ in range(n):
            pack_call("request_headers", req, plugin="default/bench", digest=DIGEST)
    elif stage == "call_in":
        for _ in range(n):
            call_in(data, None, 1 << 20)
    else:
        for _ in range(n):
            msgpack.unpackb(data, raw=False, strict_map_key=False)


def counted(stage: str, n: int, more: bool) -> int:
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", sys.executable, __file__,
             "--run", stage, str(n)] + (["--more"] if more else []),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    m = re.search(r"Collected : (\d+)", done.stderr)
    if m is None:
        raise SystemExit(f"no callgrind total:\n{done.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    ap.add_argument("--headers", type=int, choices=(4, 10), default=4)
    ap.add_argument("--run", nargs=2, metavar=("STAGE", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--more", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        loop(args.run[0], int(args.run[1]), HEADERS + (MORE_HEADERS if args.more else []))
        return
    more = args.headers == 10
    for stage in STAGES if args.stage == "all" else (args.stage,):
        per = (counted(stage, 3000, more) - counted(stage, 1000, more)) / 2000
        print(f"{stage:8s} {args.headers} headers: {per:,.0f} instructions per call")


if __name__ == "__main__":
    main()
