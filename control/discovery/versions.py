"""Snapshot versions that only grow, across every replica and restart.

A version is the sequence number JetStream gives a put to one key of the ``discovery`` bucket:
the stream leader orders every put from every replica, so a snapshot built later always has a
higher version than one built earlier, whichever replica built it, and a restarted replica
continues where the mesh left off (the bucket persists with the stream). One put per push cycle
(not per proxy) keeps this off the hot path. Fetches reuse the last version while nothing changed.
"""

from __future__ import annotations

from meshbus.bus.connection import BusConnection
from meshbus.bus.kv import BucketConfig, KeyValueStore

KEY = "version"


class VersionSource:
    def __init__(self, bus: BusConnection) -> None:
        self.kv = KeyValueStore(
            bus,
            BucketConfig(
                bus.subjects.kv_bucket("discovery"), history=1, description="meshbus discovery versions"
            ),
        )
        self.last = 0
        self._stamp: object = None

    async def next(self, stamp: object = None) -> int:
        """A fresh version; ``stamp`` names the state it is for (see `current`)."""
        self.last = await self.kv.put(KEY, b"")
        self._stamp = stamp
        return self.last

    async def current(self, stamp: object) -> int:
        """The last version if it was taken for the same state ``stamp``, else a fresh one."""
        if self.last and stamp == self._stamp:
            return self.last
        return await self.next(stamp)
