"""CA material on disk: the self-signed root kept in ``--ca-dir``, or operator files.

Several replicas may start at once on a shared directory: the first one takes an
exclusive ``flock`` and generates the root; the others wait for the lock and load it.
Files are written to a temporary name and renamed, so a reader never sees half a key.
The key file is created 0600 and, when a passphrase is given, encrypted (PKCS#8,
the best encryption `cryptography` offers).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from pathlib import Path

from .errors import CaConfigError
from .issuer import CaMaterial, generate_root, key_to_pem, material_from_pem

log = logging.getLogger(__name__)

CERT_FILE = "ca-cert.pem"
KEY_FILE = "ca-key.pem"
ENV_PASSPHRASE = "MESHBUS_CA_PASSPHRASE"


def read_passphrase(path: str | None) -> bytes | None:
    """From ``--ca-passphrase-file`` (trailing newline stripped) or $MESHBUS_CA_PASSPHRASE."""
    if path:
        try:
            data = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise CaConfigError(f"cannot read the CA passphrase file: {exc}") from None
        if not data:
            raise CaConfigError(f"CA passphrase file {path} is empty")
        return data
    env = os.environ.get(ENV_PASSPHRASE)
    return env.encode() if env else None


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` (``mode`` from creation on): a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed or the file pre-existed
    os.replace(tmp, path)


def load_or_create_root(
    ca_dir: Path, trust_domain: str, passphrase: bytes | None, now: dt.datetime
) -> tuple[CaMaterial, bool]:
    """The root in ``ca_dir``; generated on first start. Returns (material, created)."""
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = ca_dir / CERT_FILE, ca_dir / KEY_FILE
    with open(ca_dir / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if cert_path.exists() and key_path.exists():
                _check_key_mode(key_path)
                return material_from_pem(
                    cert_path.read_bytes(), key_path.read_bytes(), b"", passphrase
                ), False
            if cert_path.exists() or key_path.exists():
                raise CaConfigError(
                    f"{ca_dir} holds only one of {CERT_FILE} and {KEY_FILE}; restore or remove it"
                )
            material = generate_root(trust_domain, now)
            write_atomic(key_path, key_to_pem(material.signing_key, passphrase), 0o600)
            write_atomic(cert_path, material.root_pem, 0o644)
            log.info(
                "generated a new mesh root for %s in %s (key %s)",
                trust_domain,
                ca_dir,
                "encrypted" if passphrase else "unencrypted, mode 0600",
            )
            return material, True
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _check_key_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("CA key %s is readable by others (mode %o); chmod 600 it", path, mode)


def load_operator_material(
    cert_path: str, key_path: str, chain_path: str | None, passphrase: bytes | None
) -> CaMaterial:
    try:
        cert = Path(cert_path).read_bytes()
        key = Path(key_path).read_bytes()
        chain = Path(chain_path).read_bytes() if chain_path else b""
    except OSError as exc:
        raise CaConfigError(f"cannot read CA material: {exc}") from None
    _check_key_mode(Path(key_path))
    return material_from_pem(cert, key, chain, passphrase)
