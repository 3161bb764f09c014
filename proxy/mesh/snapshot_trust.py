"""Which keys may sign this proxy's snapshots (`meshbus.bus.signing`), and the check before applying.

The keys come with the trust bundle from meshbus-ca (`CertifyResponse.snapshot_keys`, then
`TrustBundle.snapshot_keys` on bundle events) and are kept in the state directory beside the bundle,
so a restarted proxy checks what it receives before it has talked to the CA again.

Rules:
- Once the proxy knows a key, every snapshot (pushed or fetched) must carry a signature by one of the
  known keys; anything else is refused: counted (`refused`), logged, NACKed by the agent, never applied.
- Keys are only replaced by a non-empty list (a rotation lists old and new together); a bundle that
  lists none does not turn the check off.
- A proxy that knows no key (no identity, or a CA that distributes none) applies unsigned snapshots
  and says once that it does not verify them. With the secured bus (`meshbus.proxy.mesh.bus_auth`) the
  certificate, and so the keys, come before the first snapshot.
- The last good snapshot on disk is not re-checked: it was checked before it was applied and saved,
  and the state directory is the proxy's own (0700).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from meshbus.bus.errors import SignatureError
from meshbus.bus.signing import Verifier
from meshbus.proxy.mesh.state_dir import write_private

log = logging.getLogger(__name__)

KEYS_FILE = "snapshot-keys.txt"


class SnapshotTrust:
    def __init__(self, state_dir: str | None = None, *, logger: logging.Logger | None = None) -> None:
        self._dir = Path(state_dir) if state_dir else None
        self._log = logger or log
        self._verifier = Verifier(())
        self._warned = False
        self.refused = 0
        """Snapshots refused for their signature since start."""
        self.last_refusal = ""
        if self._dir is not None:
            try:
                kept = (self._dir / KEYS_FILE).read_text().split()
            except OSError:
                kept = []
            if kept:
                self.set_keys(kept, keep=False)

    @property
    def key_ids(self) -> list[str]:
        return self._verifier.key_ids

    def set_keys(self, keys: Iterable[str], *, keep: bool = True) -> None:
        keys = sorted(set(keys))
        if not keys:
            return
        verifier = Verifier(keys)
        if verifier.key_ids == self._verifier.key_ids:
            return
        self._verifier = verifier
        self._log.info("snapshots must be signed by key(s) %s", ", ".join(verifier.key_ids))
        if keep and self._dir is not None:
            try:
                write_private(self._dir / KEYS_FILE, "\n".join(keys).encode() + b"\n")
            except OSError as exc:
                self._log.warning("could not keep the snapshot keys in %s: %s", self._dir, exc)

    def check(self, data: bytes, headers: Mapping[str, str] | None) -> None:
        """Raise `SignatureError` (counted and logged) unless ``data`` may be applied."""
        if not self._verifier:
            if not self._warned:
                self._warned = True
                self._log.warning("no snapshot signing key known yet: snapshots are applied unverified")
            return
        try:
            self._verifier.verify(data, headers)
        except SignatureError as exc:
            self.refused += 1
            self.last_refusal = str(exc)
            self._log.warning("refused a snapshot: %s (%d refused so far)", exc, self.refused)
            raise
