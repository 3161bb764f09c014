"""x-request-id values are random UUIDv4s, distinct between forked workers."""

from __future__ import annotations

import os
import uuid

import pytest

from meshbus.proxy.adapters.exchange import new_request_id

pytestmark = pytest.mark.timeout(10)


def test_request_ids_are_uuid4() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:2000]:
        u = uuid.UUID(rid)
        assert str(u) == rid and u.version == 4 and u.variant == uuid.RFC_4122
    # random through and through: no fixed per-process prefix, no counter at the end
    assert len({rid[:8] for rid in ids[:100]}) == 100 and len({rid[-12:] for rid in ids}) == len(ids)


def test_forked_workers_make_different_ids() -> None:
    new_request_id()  # the parent's generator has been used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker, as meshbus-proxy --workers N forks them
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert uuid.UUID(child).version == 4 and child != new_request_id()


def test_ids_are_not_drawn_from_the_random_module() -> None:
    # the random module's generator can be seeded (and its state read back from ~20k bits of its output):
    # ids drawn after the same seed would repeat, and would tell its state (sampling, balancing)
    import random

    from meshbus.proxy.adapters.exchange import _REQUEST_IDS
    from meshbus.telemetry.tracecontext import HEX, new_trace_id

    drawn = []
    for _ in range(2):
        random.seed(7)
        _REQUEST_IDS.reset()
        HEX.reset()
        drawn.append((new_request_id(), new_trace_id()))
    assert drawn[0][0] != drawn[1][0] and drawn[0][1] != drawn[1][1]


def test_request_id_line_carries_its_id() -> None:
    from meshbus.proxy.adapters.exchange import request_id_line

    lines = [request_id_line() for _ in range(300)]  # across draws
    for rid, line in lines:
        assert uuid.UUID(rid).version == 4 and line == b"x-request-id: " + rid.encode() + b"\r\n"
    assert len({rid for rid, _ in lines}) == 300
