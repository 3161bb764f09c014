"""Debounce, push queue, push-request merge and the ACK ledger, with a hand-driven clock."""

from __future__ import annotations

import pytest

from meshbus.bus.schemas.discovery import SnapshotAck
from meshbus.control.discovery.acks import NACK, NOT_SENT, STALE, SYNCED, AckLedger, Outcome, derive_status
from meshbus.control.discovery.debounce import Debouncer
from meshbus.control.discovery.push_queue import PushQueue
from meshbus.control.discovery.push_request import PushRequest


def test_push_request_merge_is_a_union_with_counted_reasons() -> None:
    a = PushRequest.of("config", config={"VirtualService.default.a"})
    b = PushRequest.of("config", config={"VirtualService.default.b"}, services={("default", "x")})
    c = PushRequest.of("replicas", full=True)
    m = a.merge(b).merge(c)
    assert m.full
    assert m.config == {"VirtualService.default.a", "VirtualService.default.b"}
    assert m.services == {("default", "x")}
    assert dict(m.reasons) == {"config": 2, "replicas": 1}
    assert a.merge(None) is a
    assert PushRequest().empty and not a.empty


def test_debounce_burst_becomes_one_request_after_quiet_period() -> None:
    d = Debouncer(quiet=1.0, max_delay=10.0)
    assert d.deadline() is None and d.poll(0.0) is None
    for i in range(5):  # five applies, 0.5 s apart: each restarts the quiet period
        d.add(PushRequest.of("config", config={f"k{i}"}), now=i * 0.5)
    assert d.events == 5
    assert d.poll(2.5) is None  # last event at 2.0, quiet until 3.0
    assert d.deadline() == 3.0
    req = d.poll(3.0)
    assert req is not None and req.config == {f"k{i}" for i in range(5)}
    assert not d.pending and d.poll(10.0) is None


def test_debounce_max_delay_bounds_a_steady_trickle() -> None:
    d = Debouncer(quiet=1.0, max_delay=5.0)
    t = 0.0
    released = None
    while released is None:
        d.add(PushRequest.of("heartbeat", nodes={f"n{t:.2f}"}), now=t)
        t += 0.5  # never quiet for a whole second
        released = d.poll(t)
    assert t == 5.0
    assert len(released.nodes) == 10


def test_debounce_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="meshbus:"):
        Debouncer(quiet=1.0, max_delay=0.5)


def test_push_queue_one_pending_item_per_node_merges() -> None:
    q = PushQueue()
    q.enqueue("a", PushRequest.of("x", config={"k1"}))
    q.enqueue("b", PushRequest.of("x"))
    q.enqueue("a", PushRequest.of("y", config={"k2"}))
    assert len(q) == 2
    node, req = q.dequeue()  # type: ignore[misc]
    assert node == "a" and req.config == {"k1", "k2"}  # merged, kept its place in line
    assert q.dequeue()[0] == "b"  # type: ignore[index]
    assert q.dequeue() is None


def test_push_queue_parks_changes_for_a_node_in_flight() -> None:
    q = PushQueue()
    q.enqueue("a", PushRequest.of("x", config={"k1"}))
    assert q.dequeue()[0] == "a"  # type: ignore[index]
    q.enqueue("a", PushRequest.of("y", config={"k2"}))
    q.enqueue("a", PushRequest.of("z", config={"k3"}))
    assert len(q) == 0 and q.in_flight == 1  # never two pushes in flight for a node
    q.mark_done("a")
    node, req = q.dequeue()  # type: ignore[misc]
    assert node == "a" and req.config == {"k2", "k3"}
    q.mark_done("a")
    assert q.dequeue() is None and q.in_flight == 0


def test_push_queue_discard_drops_waiting_and_parked_work() -> None:
    q = PushQueue()
    q.enqueue("a", PushRequest.of("x"))
    q.enqueue("b", PushRequest.of("x"))
    assert q.dequeue()[0] == "a"  # type: ignore[index]
    q.enqueue("a", PushRequest.of("y"))
    q.discard("a")
    q.discard("b")
    q.mark_done("a")
    assert q.dequeue() is None


def ack(
    node: str, nonce: str, version: int, error: str = "", applied: int | None = None, digest: str = "d"
) -> SnapshotAck:
    return SnapshotAck(
        node, nonce, version, digest, error, version if applied is None and not error else applied or 0
    )


def test_ledger_ack_makes_synced_and_unanswered_send_is_stale() -> None:
    led = AckLedger()
    assert derive_status(0, 0, 0) == NOT_SENT
    led.record_sent("n", version=5, nonce="x1", digest="d5", now=1.0)
    assert led.row("n").status == STALE
    assert led.on_reply(ack("n", "x1", 5, digest="d5"), now=2.0) is Outcome.ACK
    assert led.row("n").status == SYNCED and led.row("n").acked_digest == "d5"
    assert not led.should_send("n", "d5")  # unchanged: skip
    assert led.should_send("n", "d6")


def test_ledger_nack_holds_until_content_changes() -> None:
    led = AckLedger()
    led.record_sent("n", version=5, nonce="x1", digest="d5", now=1.0)
    led.on_reply(ack("n", "x1", 5, digest="d5"), now=1.0)
    led.record_sent("n", version=6, nonce="x2", digest="d6", now=2.0)
    assert led.on_reply(ack("n", "x2", 6, "bad weight", applied=5, digest="d6"), now=2.0) is Outcome.NACK
    row = led.row("n")
    assert row.status == NACK and row.nack_error == "bad weight" and row.acked_version == 5
    assert not led.should_send("n", "d6")  # hold: never resend what was refused
    assert led.should_send("n", "d7")
    led.record_sent("n", version=7, nonce="x3", digest="d7", now=3.0)
    assert led.row("n").status == STALE  # the new content is out, not answered yet
    led.on_reply(ack("n", "x3", 7, digest="d7"), now=3.0)
    assert led.row("n").status == SYNCED and led.row("n").nack_error == ""
    assert (led.acks, led.nacks) == (2, 1)


def test_ledger_ignores_stale_nonce_but_learns_the_running_version() -> None:
    led = AckLedger()
    led.record_sent("n", version=6, nonce="new", digest="d6", now=1.0)
    # A late NACK of an older push must not mark the latest send refused.
    assert led.on_reply(ack("n", "old", 4, "boom", applied=5), now=1.0) is Outcome.STALE
    row = led.row("n")
    assert row.status == STALE and row.nack_version == 0 and row.acked_version == 5
    assert led.stale == 1


def test_ledger_heartbeat_fills_in_for_a_replica_that_sent_nothing() -> None:
    led = AckLedger()
    led.record_running("n", version=9, digest="d9")
    assert led.row("n").status == SYNCED
    assert not led.should_send("n", "d9")  # it already runs that content
    assert led.should_send("n", "d10")
    led.forget("n")
    assert "n" not in led.nodes


def test_ledger_a_fetch_confirming_the_wanted_content_clears_an_obsolete_nack() -> None:
    # Seen in e2e: v3 refused, the config goes back to v2's content, and the proxy's fetch (it still
    # runs v2) is answered "runs exactly this" before the push cycle. The push then skips (sent
    # already), so only the fetch can end the NACK.
    led = AckLedger()
    led.record_sent("n", version=2, nonce="x2", digest="good", now=1.0)
    led.on_reply(ack("n", "x2", 2, digest="good"), now=1.0)
    led.record_sent("n", version=3, nonce="x3", digest="bad", now=2.0)
    led.on_reply(ack("n", "x3", 3, "cannot build", applied=2, digest="bad"), now=2.0)
    assert led.row("n").status == NACK
    led.confirm_running("n", version=2, nonce="f1", digest="good", now=3.0)
    row = led.row("n")
    assert row.status == SYNCED and row.nack_error == "" and row.acked_version == 2
    assert not led.should_send("n", "good")  # nothing to push: it runs what is wanted
    assert led.should_send("n", "bad")  # the refused content is not held any more: it is not wanted
