"""Per-node ACK/NACK ledger (sans-IO): what was sent, what the proxy runs, what it refused.

Rules (Envoy xDS, Istio ``ads.go``, go-control-plane ``sotw/v3/xds.go``):
- A NACK is recognised by its explicit ``error`` field, never by comparing versions.
- A reply whose nonce is not the last one this replica sent is stale: it still tells us which
  version the proxy runs (the proxy is the authority on that), but it never marks the latest send
  ACKed or NACKed.
- After a NACK the replica holds: `should_send` refuses to send that node the same content again;
  only a snapshot with another digest goes out (no resend loop).
- Status: SYNCED = the proxy ACKed the latest version sent (or, with nothing sent by this replica,
  it runs something); STALE = sent, not answered yet; NACK = the proxy refused the latest version.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from meshbus.bus.schemas.discovery import SnapshotAck


class Outcome(enum.Enum):
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"
    """A reply to an older nonce: the run version is recorded, the send state is not touched."""


SYNCED = "SYNCED"
STALE = "STALE"
NACK = "NACK"
NOT_SENT = "NOT SENT"


def derive_status(sent_version: int, acked_version: int, nack_version: int) -> str:
    """One status word from the three numbers a ledger row holds (meshctl uses it after merging rows)."""
    if nack_version and nack_version > acked_version and nack_version >= sent_version:
        return NACK
    if not sent_version:
        return SYNCED if acked_version else NOT_SENT
    return SYNCED if acked_version >= sent_version else STALE


@dataclass(slots=True)
class NodeLedger:
    sent_version: int = 0
    sent_nonce: str = ""
    sent_digest: str = ""
    sent_at: float = 0.0
    acked_version: int = 0
    acked_digest: str = ""
    acked_at: float = 0.0
    nack_version: int = 0
    nack_nonce: str = ""
    nack_digest: str = ""
    nack_error: str = ""

    @property
    def status(self) -> str:
        return derive_status(self.sent_version, self.acked_version, self.nack_version)


@dataclass(slots=True)
class AckLedger:
    nodes: dict[str, NodeLedger] = field(default_factory=dict)
    acks: int = 0
    nacks: int = 0
    stale: int = 0
    nacks_by_node: dict[str, int] = field(default_factory=dict)

    def row(self, node: str) -> NodeLedger:
        led = self.nodes.get(node)
        if led is None:
            led = self.nodes[node] = NodeLedger()
        return led

    def forget(self, node: str) -> None:
        self.nodes.pop(node, None)

    def should_send(self, node: str, digest: str) -> bool:
        """False when the proxy already runs or was already sent ``digest``, or refused it (hold)."""
        led = self.nodes.get(node)
        if led is None:
            return True
        if digest == led.sent_digest:
            return False  # sent already: answered or not, sending it again changes nothing
        if led.nack_digest == digest and led.nack_version > led.acked_version:
            return False  # held after a NACK until the content changes
        return not (digest == led.acked_digest and not led.sent_digest)

    def record_sent(self, node: str, *, version: int, nonce: str, digest: str, now: float) -> None:
        led = self.row(node)
        led.sent_version, led.sent_nonce, led.sent_digest, led.sent_at = version, nonce, digest, now

    def record_running(self, node: str, *, version: int, digest: str, error: str = "") -> None:
        """What a heartbeat says the proxy runs (a replica that sent nothing learns it this way)."""
        led = self.row(node)
        if version >= led.acked_version:
            led.acked_version, led.acked_digest = version, digest
        if not error and led.nack_version and led.acked_version >= led.nack_version:
            led.nack_version, led.nack_nonce, led.nack_digest, led.nack_error = 0, "", "", ""

    def confirm_running(self, node: str, *, version: int, nonce: str, digest: str, now: float) -> None:
        """The proxy asked (fetch) and runs exactly the content wanted now: it is in sync.

        A NACK it sent earlier refused content that is no longer wanted (the config went back), so
        it no longer describes the proxy; left in place it would show NACK for good, since nothing
        new would ever be sent to clear it.
        """
        self.record_running(node, version=version, digest=digest)
        self.record_sent(node, version=version, nonce=nonce, digest=digest, now=now)
        led = self.row(node)
        led.nack_version, led.nack_nonce, led.nack_digest, led.nack_error = 0, "", "", ""

    def on_reply(self, ack: SnapshotAck, *, now: float) -> Outcome:
        led = self.row(ack.node)
        if ack.applied_version > led.acked_version:
            # The proxy is the authority on what it runs, even in a stale reply.
            led.acked_version = ack.applied_version
            if not ack.error and ack.applied_version == ack.version:
                led.acked_digest = ack.digest
        current = ack.nonce == led.sent_nonce or not led.sent_nonce
        if not current:
            self.stale += 1
            return Outcome.STALE
        if ack.error:
            self.nacks += 1
            self.nacks_by_node[ack.node] = self.nacks_by_node.get(ack.node, 0) + 1
            led.nack_version, led.nack_nonce, led.nack_digest, led.nack_error = (
                ack.version,
                ack.nonce,
                ack.digest,
                ack.error,
            )
            return Outcome.NACK
        self.acks += 1
        led.acked_at = now
        if ack.version >= led.acked_version:
            led.acked_version, led.acked_digest = ack.version, ack.digest
        if led.nack_version and led.acked_version >= led.nack_version:
            led.nack_version, led.nack_nonce, led.nack_digest, led.nack_error = 0, "", "", ""
        return Outcome.ACK
