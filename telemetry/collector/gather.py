"""Ask every meshbus-telemetry replica for its traffic and add the answers up (scatter-gather).

One request on ``telemetry.stats`` (no queue group), replies collected until ``timeout`` passes or
``expect`` replicas answered. Used by ``meshctl top`` and by each replica's web view.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.aio.msg import Msg

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.telemetry import StatsReply, StatsRequest
from meshbus.telemetry.collector.views import Merged, merge


async def gather_stats(bus: BusConnection, window: float, *, timeout: float = 0.5, expect: int = 0) -> Merged:
    """Every replica's edges of the last ``window`` seconds, merged; UnavailableError when none answered."""
    replies: list[StatsReply] = []
    done = asyncio.Event()
    inbox = bus.nc.new_inbox()

    async def on_reply(msg: Msg) -> None:
        with contextlib.suppress(Exception):
            replies.append(
                codec.decode(msg.data, msg.headers, StatsReply, max_bytes=bus.settings.max_payload)
            )
            if expect and len(replies) >= expect:
                done.set()

    sub = await bus.nc.subscribe(inbox, cb=on_reply)
    try:
        data, headers = codec.encode(StatsRequest(window_s=window))
        await bus.nc.publish(bus.subjects.telemetry_stats(), data, reply=inbox, headers=headers)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), max(0.0, deadline - time.monotonic()))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if not replies:
        raise UnavailableError(f"no meshbus-telemetry replica answered on {bus.subjects.telemetry_stats()}")
    return merge(replies, window)
