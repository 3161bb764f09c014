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
