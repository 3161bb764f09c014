"""meshbus-filter-host keeps the cyclic GC off its calls once it serves, as the proxy does."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from meshbus.bus.embedded import EmbeddedNats
from meshbus.plugins.registry import info_of
from meshbus.plugins.remote.__main__ import build_parser, serve
from tests.integration.plugins.filters import Stamp


@pytest.fixture
def gc_state() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_a_serving_host_freezes_what_it_loaded_and_makes_young_passes_rare(
    nats_server: EmbeddedNats, subject_root: str, gc_state: None
) -> None:
    args = build_parser().parse_args(
        ["--nats", nats_server.url, "--subject-root", subject_root, "--filter", "stamp"]
    )
    stop = asyncio.Event()
    stop.set()  # serve returns once it has started serving
    await serve(args, info_of("stamp", Stamp, "tests"), stop)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] >= 50_000
