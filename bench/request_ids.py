"""Cost of one ``x-request-id``: the proxy's UUIDv4 (alone, and with the head line it makes) against
``str(uuid.uuid4())`` and the per-process counter it replaced (``<random prefix>-000000000001``, not a
UUIDv4). CPU time per id, best of 7.

    .venv/bin/python bench/request_ids.py [--n 300000]

Run it after ``make native`` to time the compiled exchange (the default install), and with
``MESHBUS_PURE_PYTHON=1 make native`` for the sources.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import timeit
import uuid
from collections.abc import Callable

from meshbus.proxy.adapters import exchange


def old_counter() -> Callable[[], str]:
    r = os.urandom(10).hex()
    prefix = f"{r[:8]}-{r[8:12]}-{r[12:16]}-{r[16:20]}-"
    return map(f"{prefix}%012x".__mod__, itertools.count(1)).__next__


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300_000)
    n = p.parse_args().n
    compiled = exchange.__file__.endswith(".so")
    print(f"exchange: {'compiled (mypyc)' if compiled else 'pure Python'}")
    for name, fn in (
        ("counter (before)", old_counter()),
        ("str(uuid.uuid4())", lambda: str(uuid.uuid4())),
        ("new_request_id", exchange.new_request_id),
        # what the exchange makes of an id it generates: the id and its head line
        ("id and line (before)", lambda: b"x-request-id: %b\r\n" % exchange.new_request_id().encode()),
        ("request_id_line", exchange.request_id_line),
    ):
        best = min(timeit.Timer(fn, timer=time.process_time).repeat(number=n, repeat=7)) / n
        print(f"{name:20s} {best * 1e9:6.0f} ns/id   e.g. {fn()}")


if __name__ == "__main__":
    main()
