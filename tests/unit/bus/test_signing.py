"""Snapshot signatures (bus/signing.py): over the bytes as they travel, by key id, any trusted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.errors import SignatureError
from meshbus.bus.signing import (
    SIGNATURE_HEADER,
    Signer,
    Verifier,
    generate_key_pem,
    load_private_key,
    load_public_key_text,
    public_key_pem,
)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "k.pem"
    path.write_bytes(generate_key_pem())
    return path


def test_a_signature_verifies_and_names_its_key(key_file: Path) -> None:
    signer = Signer(load_private_key(key_file))
    headers = signer.headers(b"snapshot bytes")
    assert Verifier([signer.public_text]).verify(b"snapshot bytes", headers) == signer.key_id


@pytest.mark.parametrize(
    ("body", "headers", "why"),
    [
        (b"snapshot bytes!", None, "does not verify"),  # one byte more
        (b"snapshot bytes", {}, "not signed"),
        (b"snapshot bytes", {SIGNATURE_HEADER: "0123456789abcdef AAAA"}, "unknown key"),
        (b"snapshot bytes", {SIGNATURE_HEADER: "garbage"}, "unknown key"),
    ],
)
def test_anything_else_is_refused(
    key_file: Path, body: bytes, headers: dict[str, str] | None, why: str
) -> None:
    signer = Signer(load_private_key(key_file))
    good = signer.headers(b"snapshot bytes")
    with pytest.raises(SignatureError, match=why):
        Verifier([signer.public_text]).verify(body, good if headers is None else headers)


def test_a_rotation_trusts_old_and_new(tmp_path: Path, key_file: Path) -> None:
    new_file = tmp_path / "new.pem"
    new_file.write_bytes(generate_key_pem())
    old, new = Signer(load_private_key(key_file)), Signer(load_private_key(new_file))
    both = Verifier([old.public_text, new.public_text])
    assert both.verify(b"x", old.headers(b"x")) == old.key_id
    assert both.verify(b"x", new.headers(b"x")) == new.key_id
    with pytest.raises(SignatureError):
        Verifier([new.public_text]).verify(b"x", old.headers(b"x"))


def test_public_key_files(tmp_path: Path, key_file: Path) -> None:
    pub = tmp_path / "k.pub.pem"
    pub.write_bytes(public_key_pem(load_private_key(key_file)))
    assert (
        load_public_key_text(pub)
        == load_public_key_text(key_file)
        == Signer(load_private_key(key_file)).public_text
    )
    pub.write_text("not a key")
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key_text(pub)
