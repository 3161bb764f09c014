"""The service base against a real nats-server: typed endpoints, queue groups, errors, micro."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass

import msgpack
import pytest

from meshbus.bus import BusConnection, BusService, EndpointSpec, codec, rpc
from meshbus.bus.errors import (
    BadRequestError,
    ConflictError,
    InternalError,
    NotReadyError,
    PayloadTooLargeError,
    UnavailableError,
    UnknownSchemaError,
)
from meshbus.bus.schemas import Health, HealthRequest
from meshbus.bus.subjects import micro

pytestmark = pytest.mark.timeout(30)


@codec.message("meshbus.test.v1.EchoRequest")
@dataclass(frozen=True, slots=True)
class EchoRequest:
    text: str
    fail: str = ""


@codec.message("meshbus.test.v1.EchoReply")
@dataclass(frozen=True, slots=True)
class EchoReply:
    text: str
    instance: str


def echo_service(bus: BusConnection, name: str = "replica") -> BusService:
    svc = BusService(bus, "echo", description="test echo")

    async def handle(req: EchoRequest) -> EchoReply:
        if req.fail == "conflict":
            raise ConflictError("stale revision 3")
        if req.fail == "boom":
            raise RuntimeError("unexpected")
        return EchoReply(req.text.upper(), name)

    svc.add_endpoint(EndpointSpec("echo", EchoRequest, handle))
    svc.set_ready()
    return svc


async def test_request_reply_round_trip(bus: BusConnection) -> None:
    async with echo_service(bus):
        reply = await rpc.request(bus, bus.subjects.endpoint("echo", "echo"), EchoRequest("hi"), EchoReply)
    assert reply.text == "HI"


async def test_typed_errors_cross_the_bus(bus: BusConnection) -> None:
    subject = bus.subjects.endpoint("echo", "echo")
    async with echo_service(bus) as svc:
        with pytest.raises(ConflictError, match="stale revision 3"):
            await rpc.request(bus, subject, EchoRequest("x", fail="conflict"), EchoReply)
        with pytest.raises(InternalError, match="unexpected"):
            await rpc.request(bus, subject, EchoRequest("x", fail="boom"), EchoReply)
        # the service survived both and still answers
        assert (await rpc.request(bus, subject, EchoRequest("ok"), EchoReply)).text == "OK"
        assert svc.counters["echo"].errors_by_code == {"conflict": 1, "internal": 1}


@pytest.mark.parametrize(
    ("payload", "headers", "error"),
    [
        (b"\xc1garbage", {}, BadRequestError),
        (msgpack.packb({"wrong": 1}), {}, BadRequestError),
        (msgpack.packb({"text": 5}), {}, BadRequestError),
        (
            msgpack.packb({"text": "x"}),
            {codec.SCHEMA_HEADER: "meshbus.test.v9.EchoRequest"},
            UnknownSchemaError,
        ),
    ],
)
async def test_malformed_payloads_get_the_error_envelope(
    bus: BusConnection, payload: bytes, headers: dict[str, str], error: type[Exception]
) -> None:
    subject = bus.subjects.endpoint("echo", "echo")
    async with echo_service(bus):
        reply = await bus.nc.request(subject, payload, timeout=2, headers=headers or None)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "400"
        with pytest.raises(error):
            raise rpc._error_from_reply(reply.data, reply.headers)
        # and still serves well-formed requests afterwards
        assert (await rpc.request(bus, subject, EchoRequest("a"), EchoReply)).text == "A"


async def test_oversized_payload_is_refused(nats_server, subject_root) -> None:  # type: ignore[no-untyped-def]
    from meshbus.bus import BusSettings

    small = BusConnection(BusSettings(url=nats_server.url, root=subject_root, max_payload=64))
    await small.connect()
    try:
        async with echo_service(small):
            with pytest.raises(PayloadTooLargeError):
                await rpc.request(
                    small, small.subjects.endpoint("echo", "echo"), EchoRequest("x" * 100), EchoReply
                )
    finally:
        await small.close()


async def test_not_ready_is_refused_until_set_ready(bus: BusConnection) -> None:
    svc = BusService(bus, "echo")

    async def handle(req: EchoRequest) -> EchoReply:
        return EchoReply(req.text, "r")

    svc.add_endpoint(EndpointSpec("echo", EchoRequest, handle))
    async with svc:
        subject = bus.subjects.endpoint("echo", "echo")
        with pytest.raises(NotReadyError, match="not ready"):
            await rpc.request(bus, subject, EchoRequest("x"), EchoReply)
        health = await rpc.request(bus, bus.subjects.endpoint("echo", "health"), HealthRequest(), Health)
        assert health.ready is False and health.component == "echo"
        svc.set_ready()
        assert (await rpc.request(bus, subject, EchoRequest("x"), EchoReply)).text == "x"


async def test_no_responders_is_unavailable(bus: BusConnection) -> None:
    with pytest.raises(UnavailableError, match="no responders"):
        await rpc.request(
            bus, bus.subjects.endpoint("nobody", "echo"), EchoRequest("x"), EchoReply, timeout=1
        )


async def test_a_request_that_waits_for_the_service_is_answered_once_it_starts(bus: BusConnection) -> None:
    """The compose stack's bootstrap step runs meshctl while meshbus-config is still starting."""
    subject = bus.subjects.endpoint("late", "echo")
    asked = asyncio.create_task(
        rpc.request(bus, subject, EchoRequest("x"), EchoReply, timeout=10, wait_for_service=True)
    )
    sent = bus.nc.stats["out_msgs"]
    for _ in range(500):  # no event tells that nobody answered: watch it ask, find nobody, ask again
        if bus.nc.stats["out_msgs"] >= sent + 2:
            break
        await asyncio.sleep(0.01)
    assert bus.nc.stats["out_msgs"] >= sent + 2 and not asked.done()

    async def echo(msg) -> None:  # type: ignore[no-untyped-def]
        data, headers = codec.encode(EchoReply("x", "late"))
        await bus.nc.publish(msg.reply, data, headers=headers)

    sub = await bus.nc.subscribe(subject, cb=echo)
    try:
        assert (await asked).instance == "late"
    finally:
        await sub.unsubscribe()
    with pytest.raises(UnavailableError, match="no responders"):  # and gives up at its deadline
        await rpc.request(bus, subject + "x", EchoRequest("x"), EchoReply, timeout=0.3, wait_for_service=True)


async def test_two_replicas_share_load_in_a_queue_group(
    bus: BusConnection, nats_server, subject_root
) -> None:  # type: ignore[no-untyped-def]
    from meshbus.bus import BusSettings

    second = BusConnection(BusSettings(url=nats_server.url, root=subject_root))
    await second.connect()
    try:
        async with echo_service(bus, "r1"), echo_service(second, "r2"):
            await second.flush()
            subject = bus.subjects.endpoint("echo", "echo")
            replies = await asyncio.gather(
                *(rpc.request(bus, subject, EchoRequest(str(i)), EchoReply) for i in range(200))
            )
    finally:
        await second.close()
    counts = Counter(r.instance for r in replies)
    assert set(counts) == {"r1", "r2"}, counts
    # each request is answered exactly once, by one of the two
    assert sum(counts.values()) == 200
    assert min(counts.values()) > 20, counts


async def test_micro_ping_info_stats(bus: BusConnection) -> None:
    async with echo_service(bus) as svc:
        ping = json.loads((await bus.nc.request(micro("PING", "meshbus-echo"), b"", timeout=2)).data)
        assert ping["type"] == "io.nats.micro.v1.ping_response"
        assert ping["id"] == svc.instance_id
        info = json.loads(
            (await bus.nc.request(micro("INFO", "meshbus-echo", svc.instance_id), b"", timeout=2)).data
        )
        subjects = {e["name"]: e["subject"] for e in info["endpoints"]}
        assert subjects["echo"] == bus.subjects.endpoint("echo", "echo")
        assert {e["queue_group"] for e in info["endpoints"]} == {"q"}
        await rpc.request(bus, subjects["echo"], EchoRequest("x"), EchoReply)
        stats = json.loads((await bus.nc.request(micro("STATS", "meshbus-echo"), b"", timeout=2)).data)
        echo_stats = next(e for e in stats["endpoints"] if e["name"] == "echo")
        assert echo_stats["num_requests"] == 1
