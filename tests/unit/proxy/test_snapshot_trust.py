"""SnapshotTrust: once a key is known, only snapshots it signed pass; keys persist in the state dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from meshbus.bus.errors import SignatureError
from meshbus.bus.signing import Signer, generate_key_pem
from meshbus.proxy.mesh.snapshot_trust import KEYS_FILE, SnapshotTrust


def _signer() -> Signer:
    return Signer(load_pem_private_key(generate_key_pem(), None))  # type: ignore[arg-type]


def test_without_a_key_snapshots_pass_unverified(caplog: pytest.LogCaptureFixture) -> None:
    trust = SnapshotTrust()
    trust.check(b"x", None)
    trust.check(b"y", None)
    assert trust.refused == 0
    assert sum("unverified" in r.message for r in caplog.records) == 1  # said once


def test_with_a_key_only_signed_snapshots_pass() -> None:
    signer, other = _signer(), _signer()
    trust = SnapshotTrust()
    trust.set_keys([signer.public_text])
    trust.check(b"x", signer.headers(b"x"))
    for headers in (None, other.headers(b"x"), signer.headers(b"y")):
        with pytest.raises(SignatureError):
            trust.check(b"x", headers)
    assert trust.refused == 3 and trust.last_refusal


def test_an_empty_key_list_does_not_turn_the_check_off() -> None:
    signer = _signer()
    trust = SnapshotTrust()
    trust.set_keys([signer.public_text])
    trust.set_keys([])
    with pytest.raises(SignatureError):
        trust.check(b"x", None)


def test_keys_are_kept_in_the_state_dir(tmp_path: Path) -> None:
    signer = _signer()
    SnapshotTrust(str(tmp_path)).set_keys([signer.public_text])
    assert (tmp_path / KEYS_FILE).stat().st_mode & 0o777 == 0o600
    restarted = SnapshotTrust(str(tmp_path))
    assert restarted.key_ids == [signer.key_id]
    with pytest.raises(SignatureError):
        restarted.check(b"x", None)
