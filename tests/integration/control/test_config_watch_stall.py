"""Discovery's config watch notices when its ordered consumer is gone and watches again.

Under chaos a NATS node holding the watch's consumer died while discovery stayed connected to another
node: nats-py's ordered consumer does not notice, so later applies never reached the proxies. Here the
consumer is deleted on the server, which is what the node's death does to it.
"""

from __future__ import annotations

import pytest

from meshbus.bus import BusConnection
from meshbus.control.discovery.config_watch import ConfigWatch
from tests.integration.control.discovery_helpers import Mesh, vs
from tests.support.bounded import eventually
from tests.support.nats_server import EmbeddedNats

pytestmark = pytest.mark.timeout(30)


async def test_a_watch_whose_consumer_is_gone_is_restarted_and_catches_up(
    nats_server: EmbeddedNats, subject_root: str
) -> None:
    mesh = await Mesh(nats_server.url, subject_root).start()
    try:
        await mesh.put(vs(100))
        bus: BusConnection = await mesh.connect("discovery")
        watch = ConfigWatch(bus, lambda keys, model: None, stall_check=0.2)
        await watch.start()

        async def synced() -> bool:
            return watch.synced

        await eventually("the watch's initial load", synced)
        js = bus.nc.jetstream()
        stream = watch.kv.stream
        consumers = await js.consumers_info(stream)
        assert consumers, "the watch's ordered consumer"
        for c in consumers:
            await js.delete_consumer(stream, c.name)
        rev = await mesh.put(vs(0))

        async def caught_up() -> bool:  # after two stall checks, by a new watch
            return watch.seen >= rev

        await eventually("the watch to catch up with the put", caught_up)
        assert watch.stalls >= 1
        (entry,) = [e for e in watch.model.entries.values() if e.kind == "VirtualService"]
        assert entry.revision == rev
        await watch.stop()
    finally:
        for b in mesh.buses:
            await b.close()
