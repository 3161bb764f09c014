"""The proxy's certificate client: get an X.509-SVID from meshbus-ca, keep it fresh.

- The key is made here (ECDSA P-256) and never leaves the process: only the CSR travels.
- Bootstrap: CSR + bootstrap token (``--token`` / ``$MESHBUS_TOKEN``). Renewal: CSR + the
  current chain + a signature by the current key over the new CSR (no token needed).
- Renewal at half the lifetime (±1 % jitter, Istio's SECRET_GRACE_PERIOD_RATIO), each time
  with a fresh key. A renewal builds new `ssl.SSLContext` objects and swaps the reference;
  connections already open keep the context they were made with, so nothing is dropped.
- Trust bundle updates arrive on ``ca_bundle_changed()``; the contexts are rebuilt with the
  same certificate and the new roots (root rotation: old and new trusted together).
- Static stability: when the bus or the CA is down the current certificate stays in use and
  renewal retries with capped backoff until it succeeds (or the certificate expires).
- Restarts (``state_dir``, `meshbus.proxy.mesh.state_dir`): every certificate obtained is kept with
  its key (0600, written atomically). A restarted proxy whose kept certificate is still valid serves
  with it at once and renews with it right away, as a SPIRE agent does with its SVID: bootstrap
  tokens are single-use, and the current certificate is what proves the identity from then on (the
  CA checks it and a signature by its key, `meshbus.control.ca.validator.verify_renewal`). Only a
  proxy whose kept certificate expired needs a new token, and the refusal says so.

Usage (the proxy agent)::

    client = CertClient(bus, CertClientConfig(SpiffeId.workload(td, ns, sa), token=resolve_token(args.token)))
    client.add_rotation_callback(lambda ident: listener_ctx.update(ident.server_context))
    await client.start()          # readiness: returns once the first SVID is in hand
    ctx = client.current.client_context   # per new upstream connection
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from meshbus.bus import codec, rpc
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError, PermissionDeniedError, UnavailableError
from meshbus.bus.schemas.identity import CertifyRequest, CertifyResponse, TrustBundle, renewal_proof_payload
from meshbus.bus.spiffe import SpiffeId, load_pem_chain
from meshbus.bus.tasks import cancel_and_wait
from meshbus.proxy.mesh.state_dir import StoredIdentity, load_identity, save_bundle, save_identity
from meshbus.proxy.tls.contexts import TlsMaterial, build_client_context, build_server_context

log = logging.getLogger(__name__)

ENV_TOKEN = "MESHBUS_TOKEN"
# Refusals that retrying the same request cannot fix (token/identity problems).
_FATAL_CODES = frozenset(
    {
        "token_invalid",
        "token_expired",
        "token_exhausted",
        "identity_mismatch",
        "invalid_csr",
        "bad_request",
        "permission_denied",
        "renewal_refused",
    }
)


def resolve_token(flag: str | None) -> str:
    """``--token`` wins, then ``$MESHBUS_TOKEN``, else empty."""
    return (flag or os.environ.get(ENV_TOKEN, "")).strip()


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: SpiffeId) -> x509.CertificateSigningRequest:
    """A CSR whose only URI SAN is ``spiffe_id`` (empty subject, so the SAN is critical)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=True
        )
        .sign(key, hashes.SHA256())
    )


def renewal_proof(current_key: ec.EllipticCurvePrivateKey, csr: x509.CertificateSigningRequest) -> bytes:
    return current_key.sign(
        renewal_proof_payload(csr.public_bytes(serialization.Encoding.DER)), ec.ECDSA(hashes.SHA256())
    )


def renewal_delay(
    issued_at: float, not_after: float, *, fraction: float, jitter: float, rand: float
) -> float:
    """Seconds from ``issued_at`` to the renewal: ``fraction`` of the lifetime, ± ``jitter`` of it.

    ``rand`` is uniform in [0, 1) (injected, so tests are deterministic).
    """
    lifetime = max(0.0, not_after - issued_at)
    return max(0.0, lifetime * (fraction + jitter * (2.0 * rand - 1.0)))


@dataclass(frozen=True, slots=True)
class CertClientConfig:
    spiffe_id: SpiffeId
    token: str = ""
    """Bootstrap token; needed for the first certificate (and as a fallback if renewal is refused)."""
    ttl_s: int = 0
    """Requested SVID lifetime; 0 = the CA default (24 h)."""
    renew_fraction: float = 0.5
    jitter: float = 0.01
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0
    request_timeout_s: float = 5.0
    node: str = ""
    state_dir: str | None = None
    """Where the key and certificate are kept across restarts (None: not kept; each start needs a token)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One SVID with the contexts built from it. Immutable: a renewal makes a new one."""

    spiffe_id: SpiffeId
    cert_chain_pem: bytes
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    bundle_pem: bytes
    bundle_version: int
    leaf: x509.Certificate
    issued_at: float
    server_context: ssl.SSLContext = field(repr=False)
    """Inbound mTLS context (`build_server_context`); hand it to start_tls / RotatingServerContext."""
    client_context: ssl.SSLContext = field(repr=False)
    """Outbound mTLS context (`build_client_context`); then `verify_peer` with the expected identity."""

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    @property
    def serial_hex(self) -> str:
        return f"{self.leaf.serial_number:x}"

    @property
    def material(self) -> TlsMaterial:
        return TlsMaterial(self.cert_chain_pem, self.key, self.bundle_pem)


def build_identity(
    spiffe_id: SpiffeId,
    key: ec.EllipticCurvePrivateKey,
    chain_pem: bytes,
    bundle_pem: bytes,
    bundle_version: int,
    issued_at: float,
) -> Identity:
    material = TlsMaterial(chain_pem, key, bundle_pem)
    return Identity(
        spiffe_id=spiffe_id,
        cert_chain_pem=chain_pem,
        key=key,
        bundle_pem=bundle_pem,
        bundle_version=bundle_version,
        leaf=load_pem_chain(chain_pem)[0],
        issued_at=issued_at,
        server_context=build_server_context(material),
        client_context=build_client_context(material),
    )


RotationCallback = Callable[[Identity], None]


class CertClient:
    """Asyncio adapter: fetch, renew and publish the proxy's SVID (see the module docstring)."""

    def __init__(
        self,
        bus: BusConnection,
        config: CertClientConfig,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        logger: logging.Logger | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self._clock = clock
        self._rand = rand
        self._log = logger or log
        self._current: Identity | None = None
        self._callbacks: list[RotationCallback] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._next_renewal_at = 0.0
        self._renewed = asyncio.Event()
        self._kept: StoredIdentity | None = None
        """A valid certificate kept from before the restart that is not in use (yet): it renews."""
        self._kept_expired: StoredIdentity | None = None
        self.renewals = 0
        self.failures = 0
        self.last_error = ""
        self.snapshot_keys: tuple[str, ...] = ()
        """The keys snapshots must be signed with, from the CA's last answer or bundle event (set
        before the rotation callbacks run)."""

    # -- state
    @property
    def current(self) -> Identity | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def next_renewal_at(self) -> float:
        return self._next_renewal_at

    def add_rotation_callback(self, cb: RotationCallback) -> None:
        """``cb(identity)`` runs (synchronously, in the loop) after every certificate or bundle change."""
        self._callbacks.append(cb)

    async def wait_ready(self, timeout: float | None = None) -> Identity:
        await asyncio.wait_for(self._ready.wait(), timeout)
        if self._current is None:  # pragma: no cover - _ready is only set with a current identity
            raise UnavailableError("no certificate yet")
        return self._current

    # -- lifecycle
    async def start(self) -> Identity:
        """Get the first SVID (retrying while the CA is unreachable), then renew in the background.

        With a valid certificate kept in ``state_dir`` it returns at once with that one (and renews
        it right away in the background), without asking the CA first. Raises the CA's typed error
        at once when the token itself is refused (expired, used up, bound to another identity):
        retrying could not help.
        """
        self._sub = await self.bus.subscribe(self.bus.subjects.ca_bundle_changed(), self._on_bundle)
        try:
            ident = self._restore()
            if ident is None:
                ident = await self._obtain_with_retry(first=True)
        except BusError as exc:
            await self.stop()
            raise self._explain(exc) from None
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._renew_loop(), name="meshbus-cert-renewal")
        return ident

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task], logger=self._log)
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be closed
                self._log.debug("bundle unsubscribe: %r", exc)

    async def renew_now(self) -> Identity:
        """Renew immediately (operator action, tests). The background schedule follows the new cert."""
        ident = await self._obtain()
        self._renewed.set()
        return ident

    # -- internals
    def _restore(self) -> Identity | None:
        """Serve with the certificate kept from before a restart, if it is still ours and valid."""
        cfg = self.config
        if cfg.state_dir is None:
            return None
        kept = load_identity(cfg.state_dir)
        if kept is None:
            return None
        if kept.spiffe_id != cfg.spiffe_id:
            self._log.warning("%s holds a certificate for %s, not %s: not used", kept.path, kept.spiffe_id,
                              cfg.spiffe_id)  # fmt: skip
            return None
        if kept.not_after <= self._clock():
            self._kept_expired = kept
            self._log.warning("the certificate kept in %s expired at %s", kept.path, kept.expiry_text())
            return None
        self._kept = kept
        try:
            # bundle version 0: any bundle the CA or the bus hands over next replaces the kept one
            ident = build_identity(
                kept.spiffe_id, kept.key, kept.cert_chain_pem, kept.bundle_pem, 0, kept.not_before
            )
        except (ssl.SSLError, ValueError) as exc:
            self._log.warning(
                "cannot serve with the identity kept in %s (%s): renewing first", kept.path, exc
            )
            return None
        self._install(ident, "restored")
        self._next_renewal_at = self._clock()  # renew with it now: a fresh key, and the CA's word
        return ident

    def _explain(self, exc: BusError) -> BusError:
        """A refusal at start, with what the kept certificate has to do with it."""
        kept = self._kept_expired
        if kept is None or exc.code not in _FATAL_CODES:
            return exc
        sid = self.config.spiffe_id
        return type(exc)(
            f"{exc}; the certificate kept in {kept.path} expired at {kept.expiry_text()}, so this proxy "
            f"needs a new bootstrap token: meshctl token create -n {sid.namespace} "
            f"--service-account {sid.service_account}, then --token or ${ENV_TOKEN}"
        )

    async def _obtain_with_retry(self, *, first: bool) -> Identity:
        delay = self.config.retry_initial_s
        while True:
            try:
                return await self._obtain()
            except BusError as exc:
                self.failures += 1
                self.last_error = str(exc)
                if first and exc.code in _FATAL_CODES:
                    raise
                expires_in = (self._current.not_after - self._clock()) if self._current else float("inf")
                self._log.warning(
                    "certificate %s failed (%s): %s; retrying in %.1fs (current expires in %.0fs)",
                    "request" if first else "renewal",
                    exc.code,
                    exc,
                    delay,
                    expires_in,
                )
            await asyncio.sleep(delay * (0.5 + self._rand()))
            delay = min(delay * 2, self.config.retry_max_s)

    async def _obtain(self) -> Identity:
        cfg = self.config
        key = make_key()
        csr = make_csr(key, cfg.spiffe_id)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        current = self._current
        holder: Identity | StoredIdentity | None = current or self._kept
        if holder is not None and holder.not_after > self._clock():
            req = CertifyRequest(
                csr_pem=csr_pem,
                current_chain_pem=holder.cert_chain_pem.decode(),
                proof=renewal_proof(holder.key, csr),
                ttl_seconds=cfg.ttl_s,
                node=cfg.node,
            )
        elif cfg.token:
            req = CertifyRequest(csr_pem=csr_pem, token=cfg.token, ttl_seconds=cfg.ttl_s, node=cfg.node)
        else:
            raise PermissionDeniedError(
                f"no bootstrap token for {cfg.spiffe_id}: pass --token or set ${ENV_TOKEN} (meshctl token create)"
            )
        subject = self.bus.subjects.ca("certify")
        try:
            resp = await rpc.request(self.bus, subject, req, CertifyResponse, timeout=cfg.request_timeout_s)
        except PermissionDeniedError as exc:
            if req.token or not cfg.token or exc.code == "identity_mismatch":
                raise
            # the current certificate was refused (e.g. its root retired): fall back to the token
            self._log.warning("renewal by certificate refused (%s); retrying with the bootstrap token", exc)
            req = CertifyRequest(csr_pem=csr_pem, token=cfg.token, ttl_seconds=cfg.ttl_s, node=cfg.node)
            resp = await rpc.request(self.bus, subject, req, CertifyResponse, timeout=cfg.request_timeout_s)
        bundle_pem, bundle_version = resp.trust_bundle_pem.encode(), resp.trust_bundle_version
        if current is not None and current.bundle_version > bundle_version:
            bundle_pem, bundle_version = current.bundle_pem, current.bundle_version
        ident = build_identity(
            cfg.spiffe_id, key, resp.cert_chain_pem.encode(), bundle_pem, bundle_version, self._clock()
        )
        if ident.leaf.not_valid_after_utc.timestamp() <= self._clock():
            raise UnavailableError("CA returned an already expired certificate")
        if resp.snapshot_keys and resp.trust_bundle_version >= (current.bundle_version if current else 0):
            self.snapshot_keys = tuple(resp.snapshot_keys)
        self._keep(ident)  # before the callbacks: they may read it from the state directory
        self._install(ident, "renewed" if holder is not None else "obtained")
        self._kept = None
        return ident

    def _keep(self, ident: Identity) -> None:
        if self.config.state_dir is None:
            return
        try:
            save_identity(self.config.state_dir, ident.key, ident.cert_chain_pem, ident.bundle_pem)
        except OSError as exc:  # serving matters more than keeping: the next restart needs a token
            self.failures += 1
            self.last_error = f"could not keep the certificate in {self.config.state_dir}: {exc}"
            self._log.error("%s", self.last_error)

    def _install(self, ident: Identity, what: str) -> None:
        self._current = ident
        self._next_renewal_at = ident.issued_at + renewal_delay(
            ident.issued_at,
            ident.not_after,
            fraction=self.config.renew_fraction,
            jitter=self.config.jitter,
            rand=self._rand(),
        )
        if what == "renewed":
            self.renewals += 1
        self._log.info(
            "%s certificate for %s (serial %s, expires %s, renewal at %s)",
            what,
            ident.spiffe_id,
            ident.serial_hex,
            dt.datetime.fromtimestamp(ident.not_after, dt.UTC).isoformat(timespec="seconds"),
            dt.datetime.fromtimestamp(self._next_renewal_at, dt.UTC).isoformat(timespec="seconds"),
        )
        self._notify(ident)
        self._ready.set()

    def _notify(self, ident: Identity) -> None:
        for cb in list(self._callbacks):
            try:
                cb(ident)
            except Exception:
                self.failures += 1
                self._log.exception("certificate rotation callback failed")

    async def _renew_loop(self) -> None:
        while True:
            wait = max(0.0, self._next_renewal_at - self._clock())
            self._renewed.clear()
            try:
                # wakes early when renew_now() ran, so the schedule follows the newest certificate.
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races
                # with the event being set, and stop() would then wait for the next renewal.
                async with asyncio.timeout(wait):
                    await self._renewed.wait()
                continue
            except TimeoutError:
                pass
            await self._obtain_with_retry(first=False)

    async def _on_bundle(self, msg: Msg) -> None:
        try:
            bundle = codec.decode(msg.data, msg.headers, TrustBundle)
        except BusError as exc:
            self._log.warning("ignored an undecodable trust bundle: %s", exc)
            return
        current = self._current
        if current is None or bundle.trust_domain != current.spiffe_id.trust_domain:
            return
        if bundle.version <= current.bundle_version or not bundle.roots:
            return
        pem = bundle.pem().encode()
        try:
            ident = build_identity(
                current.spiffe_id, current.key, current.cert_chain_pem, pem, bundle.version, current.issued_at
            )
        except (ValueError, ssl.SSLError) as exc:  # roots that are not certificates: keep what we trust
            self._log.warning("ignored trust bundle v%d: %s", bundle.version, exc)
            return
        self._log.info("trust bundle v%d: %d root(s)", bundle.version, len(bundle.roots))
        self._current = ident
        if bundle.snapshot_keys:
            self.snapshot_keys = bundle.snapshot_keys
        self._notify(ident)
        if self.config.state_dir is not None:
            try:
                save_bundle(self.config.state_dir, pem)
            except OSError as exc:
                self._log.warning("could not keep the trust bundle in %s: %s", self.config.state_dir, exc)
