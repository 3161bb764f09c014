"""What a sidecar keeps across restarts in its state directory (``--state-dir``), and how it is written.

- ``snapshot.msgpack``: the last good config snapshot (`snapshot_apply.save_state`), so a restart
  while the control plane is away still serves.
- ``identity.pem``: the workload's private key, then its certificate chain (leaf first). One file, so
  a key and its certificate are always replaced together.
- ``trust-bundle.pem``: the roots peers are verified against.

Every file is written by `write_private`: a temporary file in the same directory, created 0600,
fsynced and renamed over the old one, then the directory fsynced; so a crash or power loss leaves
the old file or the new one, never half of one, and the key is never readable by anyone else, not
even for a moment. The directory is created 0700. Sans-IO in the package's sense (files, no sockets).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshbus.bus.spiffe import SpiffeId, SvidError, load_pem_chain, svid_id

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "snapshot.msgpack"
IDENTITY_FILE = "identity.pem"
BUNDLE_FILE = "trust-bundle.pem"


def write_private(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably, mode 0600 from the first byte."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask and ignored for an old file
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.close(fd)
    try:
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dirfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)  # the rename itself survives a power loss
    finally:
        os.close(dirfd)


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    """The key and certificate a sidecar kept, as read back from its state directory."""

    spiffe_id: SpiffeId
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert_chain_pem: bytes
    bundle_pem: bytes
    """The trust bundle kept beside it (empty when none was kept)."""
    leaf: x509.Certificate
    path: Path

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    @property
    def not_before(self) -> float:
        return self.leaf.not_valid_before_utc.timestamp()

    def expiry_text(self) -> str:
        return dt.datetime.fromtimestamp(self.not_after, dt.UTC).isoformat(timespec="seconds")


def save_identity(
    directory: str | Path, key: ec.EllipticCurvePrivateKey, chain_pem: bytes, bundle_pem: bytes
) -> None:
    """Keep the key with its chain (one file) and the trust bundle."""
    d = Path(directory)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(d / BUNDLE_FILE, bundle_pem)
    write_private(d / IDENTITY_FILE, key_pem + chain_pem)


def save_bundle(directory: str | Path, bundle_pem: bytes) -> None:
    write_private(Path(directory) / BUNDLE_FILE, bundle_pem)


def has_identity(directory: str | Path | None) -> bool:
    return directory is not None and (Path(directory) / IDENTITY_FILE).is_file()


def load_identity(directory: str | Path) -> StoredIdentity | None:
    """The kept identity, or None when there is none or it is unusable (said in a warning)."""
    path = Path(directory) / IDENTITY_FILE
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring the identity kept in %s: %s", path, exc)
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Someone else may have read the key: it is still ours to prove, and the renewal that
        # follows a restart replaces it with a fresh one, but say so and close the file now.
        log.warning("%s was readable by others (mode %o); set to 0600", path, stat.S_IMODE(mode))
        with contextlib.suppress(OSError):
            path.chmod(0o600)
    try:
        key = serialization.load_pem_private_key(data, password=None)
        chain = load_pem_chain(data)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"the key is {type(key).__name__}, not ECDSA")
        if not chain:
            raise ValueError("no certificate after the key")
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or (
            leaf_key.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError("the certificate is not for the key beside it")
        sid = svid_id(chain[0])
    except (ValueError, TypeError, SvidError) as exc:
        log.warning("ignoring the identity kept in %s: %s", path, exc)
        return None
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    try:
        bundle_pem = (Path(directory) / BUNDLE_FILE).read_bytes()
    except OSError:
        bundle_pem = b""
    return StoredIdentity(sid, key, chain_pem, bundle_pem, chain[0], path)
