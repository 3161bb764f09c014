"""Signed snapshots: discovery signs what it sends a proxy; the proxy checks before applying.

The signature is Ed25519 over the message body exactly as it travels (the msgpack bytes), so
checking needs no re-encoding and covers every field, unknown ones included. It rides in the
``Meshbus-Signature`` header as ``<key id> <base64 signature>``; the key id is the first 16 hex
digits of the SHA-256 of the raw public key, so a verifier holding several keys (a rotation: the old
and the new key trusted together) picks the right one. Public keys travel in the trust bundle of
meshbus-ca (`TrustBundle.snapshot_keys`: raw 32-byte keys, base64), which a proxy already trusts
for its certificates; the private key stays with meshbus-discovery (a PEM file, 0600).

What a signature does not cover is said where it is checked: the snapshot names its node (a
proxy drops one for another node) and its version (a replayed older one is not newer, so ignored).
Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import SignatureError

SIGNATURE_HEADER = "Meshbus-Signature"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """The form a trust bundle carries: the raw key, base64."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def generate_key_pem() -> bytes:
    """A new private key, PKCS#8 PEM (unencrypted: the file is 0600, as a SPIRE server's key is)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"meshbus: {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"meshbus: {path}: the snapshot signing key must be Ed25519")
    return key


def load_public_key_text(path: str | Path) -> str:
    """A public key file (PEM SubjectPublicKeyInfo, or the private key itself) -> bundle form."""
    data = Path(path).read_bytes()
    try:
        if b"PRIVATE KEY" in data:
            public = load_private_key(path).public_key()
        else:
            loaded = serialization.load_pem_public_key(data)
            if not isinstance(loaded, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            public = loaded
    except ValueError as exc:
        raise ValueError(f"meshbus: {path}: not an Ed25519 public key ({exc})") from None
    return public_key_text(public)


def public_key_pem(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Signer:
    """Signs message bodies with one private key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self.key_id = key_id(private.public_key())
        self.public_text = public_key_text(private.public_key())

    def headers(self, data: bytes) -> dict[str, str]:
        signature = base64.b64encode(self._key.sign(data)).decode()
        return {SIGNATURE_HEADER: f"{self.key_id} {signature}"}


class Verifier:
    """Checks signatures against the keys a trust bundle lists (any of them may have signed)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for text in keys:
            try:
                public = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
            except ValueError as exc:
                raise ValueError(
                    f"meshbus: bad snapshot key {text[:16]!r} in the trust bundle: {exc}"
                ) from None
            self._keys[key_id(public)] = public

    def __bool__(self) -> bool:
        return bool(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, data: bytes, headers: Mapping[str, str] | None) -> str:
        """Return the id of the key that signed ``data``; raise `SignatureError` otherwise."""
        value = (headers or {}).get(SIGNATURE_HEADER, "")
        if not value:
            raise SignatureError("snapshot is not signed")
        kid, _, signature = value.partition(" ")
        public = self._keys.get(kid)
        if public is None:
            raise SignatureError(
                f"snapshot signed by unknown key {kid[:16]!r} (trusted: {', '.join(self.key_ids)})"
            )
        try:
            public.verify(base64.b64decode(signature, validate=True), data)
        except (InvalidSignature, ValueError):
            raise SignatureError(f"snapshot signature by key {kid} does not verify") from None
        return kid
