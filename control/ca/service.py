"""meshbus-ca on the bus: ``certify``, ``token`` and ``bundle`` endpoints, bundle publication.

Every replica loads the same CA material and serves the endpoints in the ``q`` queue
group. Shared state is in KV (tokens, bundle); the in-memory bundle follows
``ca_bundle_changed()`` events and a periodic sweep, which also retires roots whose
rotation overlap has passed. Endpoints answer ``not_ready`` until the bundle is synced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from cryptography import x509
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import (
    BadRequestError,
    BusError,
    PermissionDeniedError,
)
from meshbus.bus.kv import when_available
from meshbus.bus.schemas.identity import (
    BundleReply,
    BundleRequest,
    CertifyRequest,
    CertifyResponse,
    TokenCreateReply,
    TokenCreateRequest,
    TrustBundle,
)
from meshbus.bus.service import BusService, EndpointSpec
from meshbus.bus.spiffe import InvalidSpiffeIdError, SpiffeId
from meshbus.bus.tasks import cancel_and_wait

from . import bundle as bundle_rules
from . import tokens
from .issuer import Issuer
from .store import BundleStore, TokenStore
from .validator import parse_csr, verify_renewal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CaServiceConfig:
    root_overlap: dt.timedelta = dt.timedelta(hours=48)
    """How long a root stays trusted after replicas stop signing under it (>= the max leaf lifetime in use)."""
    extra_roots: tuple[x509.Certificate, ...] = ()
    """Also trusted (``--trust-root``): e.g. the next root, published before the switch."""
    sweep_interval_s: float = 60.0
    snapshot_keys: tuple[str, ...] = ()
    """Public keys snapshots are signed with (``--snapshot-key``), handed to proxies in the bundle.
    Empty: the stored bundle keeps the keys it has (a replica started without the flag removes none)."""


class CaService:
    """One meshbus-ca replica. ``async with CaService(...)`` starts and stops it."""

    def __init__(
        self,
        bus: BusConnection,
        issuer: Issuer,
        config: CaServiceConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self.bus = bus
        self.issuer = issuer
        self.config = config or CaServiceConfig()
        self.trust_domain = issuer.config.trust_domain
        self._clock = clock
        self._log = logger or log
        self.service = BusService(bus, "ca", description="meshbus certificate authority (SPIFFE X.509-SVIDs)")
        subj = bus.subjects
        self.service.add_endpoint(
            EndpointSpec("certify", CertifyRequest, self.certify, subject=subj.ca("certify"))
        )
        self.service.add_endpoint(
            EndpointSpec("token", TokenCreateRequest, self.create_token, subject=subj.ca("token"))
        )
        self.service.add_endpoint(
            EndpointSpec("bundle", BundleRequest, self.get_bundle, subject=subj.ca("bundle"))
        )
        self._tokens: TokenStore | None = None
        self._bundles: BundleStore | None = None
        self._bundle = TrustBundle(trust_domain=self.trust_domain)
        self._bundle_pem = ""
        self._roots: list[x509.Certificate] = []
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.issued = 0

    # -- lifecycle
    async def start(self) -> None:
        await self._open_stores()
        self._sub = await self.bus.subscribe(self.bus.subjects.ca_bundle_changed(), self._on_bundle_event)
        changed = await self._merge_bundle()
        await self.service.start()
        await self.bus.flush()  # subscriptions are live on the server once start() returns
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="meshbus-ca-bundle-sweep")
        self.service.set_ready()
        if changed:  # after the endpoints are up, so an event also means "the CA answers"
            await self._publish_bundle()

    async def _open_stores(self) -> None:
        """Open the token and bundle buckets, waiting out a JetStream that cannot answer yet: a CA
        that exited instead would be restarted with a growing backoff while proxies' certificates
        run out (found by tests/chaos)."""

        async def open_() -> None:
            self._tokens = await TokenStore.open(self.bus)
            self._bundles = await BundleStore.open(self.bus)

        await when_available(open_, "CA buckets", self._log)

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            await cancel_and_wait([sweeper])
        await self.service.stop()
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                self._log.debug("bundle unsubscribe: %r", exc)

    async def __aenter__(self) -> CaService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- bundle
    @property
    def bundle(self) -> TrustBundle:
        return self._bundle

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    async def sync_bundle(self) -> TrustBundle:
        """Merge this replica's roots into the stored bundle (CAS); publish when it changed."""
        if await self._merge_bundle():
            await self._publish_bundle()
        return self._bundle

    async def _merge_bundle(self) -> bool:
        if self._bundles is None:
            raise RuntimeError("meshbus: CaService.start() first")
        now = self._now()
        active = [self.issuer.material.root]

        def change(previous: TrustBundle | None) -> TrustBundle:
            merged = bundle_rules.merge(
                previous,
                trust_domain=self.trust_domain,
                active=active,
                extra=list(self.config.extra_roots),
                now=now,
                overlap=self.config.root_overlap,
            )
            keys = self.config.snapshot_keys or (previous.snapshot_keys if previous is not None else ())
            return codec.evolve(merged, updated_at=now.timestamp(), snapshot_keys=tuple(keys))

        stored, written = await self._bundles.apply(change, bundle_rules.same_roots)
        self._set_bundle(stored)
        if written:
            self._log.info(
                "trust bundle v%d: %d root(s) for %s", stored.version, len(stored.roots), self.trust_domain
            )
        return written

    async def _publish_bundle(self) -> None:
        await self.bus.publish(self.bus.subjects.ca_bundle_changed(), self._bundle)

    def _set_bundle(self, bundle: TrustBundle) -> None:
        if bundle.version < self._bundle.version:
            return
        self._bundle = bundle
        self._bundle_pem = bundle.pem()
        self._roots = bundle_rules.roots_of(bundle, self._now())
        self.service.details["bundle_version"] = str(bundle.version)
        self.service.details["roots"] = str(len(bundle.roots))

    async def _on_bundle_event(self, msg: Msg) -> None:
        # The event only says "the bundle changed": the bundle itself is read back from KV, where
        # replicas write it, so a forged or mangled event cannot change what this CA trusts.
        try:
            bundle = codec.decode(msg.data, msg.headers, TrustBundle)
        except BusError as exc:
            self._log.warning("ignored an undecodable trust bundle event: %s", exc)
            return
        if bundle.trust_domain != self.trust_domain or self._bundles is None:
            return
        try:
            stored, revision = await self._bundles.load()
        except BusError as exc:  # KV away: the sweep merges again later
            self._log.warning("trust bundle changed, but it cannot be read now: %s", exc)
            return
        if stored is not None:
            self._set_bundle(codec.evolve(stored, version=revision))

    async def sweep(self) -> int:
        """Retire roots past their overlap and delete long-expired tokens; returns tokens removed."""
        await self.sync_bundle()
        if self._tokens is None:
            return 0
        removed = await self._tokens.sweep(self._clock())
        if removed:
            self._log.info("removed %d expired bootstrap token(s)", removed)
        return removed

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                self._log.exception("CA sweep failed; retrying in %.0fs", self.config.sweep_interval_s)

    # -- endpoints
    async def certify(self, req: CertifyRequest) -> CertifyResponse:
        csr = parse_csr(req.csr_pem, self.trust_domain)
        now_ts = self._clock()
        now = dt.datetime.fromtimestamp(now_ts, dt.UTC)
        if req.token:
            if self._tokens is None:
                raise RuntimeError("meshbus: CaService.start() first")
            record = await self._tokens.consume(req.token, csr.spiffe_id, now_ts)
            how = f"token {record.token_id} (use {record.uses}/{record.max_uses})"
        elif req.current_chain_pem:
            verify_renewal(
                csr,
                req.current_chain_pem,
                req.proof,
                roots=self._roots,
                trust_domain=self.trust_domain,
                now=now,
            )
            how = "renewal"
        else:
            raise PermissionDeniedError(
                "certify needs a bootstrap token or the current certificate (renewal)"
            )
        ttl = dt.timedelta(seconds=req.ttl_seconds) if req.ttl_seconds > 0 else None
        issued = self.issuer.sign(csr.public_key, csr.spiffe_id, now, ttl)
        self.issued += 1
        self._log.info(
            "issued %s serial %s until %s by %s%s",
            csr.spiffe_id,
            issued.serial_hex,
            issued.not_after.isoformat(timespec="seconds"),
            how,
            f" for node {req.node}" if req.node else "",
        )
        return CertifyResponse(
            cert_chain_pem=issued.chain_pem.decode(),
            trust_bundle_pem=self._bundle_pem,
            expires_at=issued.not_after.timestamp(),
            spiffe_id=str(csr.spiffe_id),
            serial=issued.serial_hex,
            trust_bundle_version=self._bundle.version,
            snapshot_keys=list(self._bundle.snapshot_keys),
        )

    async def create_token(self, req: TokenCreateRequest) -> TokenCreateReply:
        # Who may call this is a bus permission (operators' NATS users only), not a CA check.
        if self._tokens is None:
            raise RuntimeError("meshbus: CaService.start() first")
        try:
            sid = SpiffeId.workload(self.trust_domain, req.namespace, req.service_account)
            token, record = tokens.mint(sid, ttl_s=req.ttl_seconds, max_uses=req.max_uses, now=self._clock())
        except (InvalidSpiffeIdError, ValueError) as exc:
            raise BadRequestError(str(exc)) from None
        await self._tokens.add(record)
        self._log.info(
            "created token %s for %s (%d use(s), expires in %ds)",
            record.token_id,
            sid,
            req.max_uses,
            req.ttl_seconds,
        )
        return TokenCreateReply(
            token=token,
            token_id=record.token_id,
            spiffe_id=str(sid),
            expires_at=record.expires_at,
            max_uses=record.max_uses,
        )

    async def get_bundle(self, _req: BundleRequest) -> BundleReply:
        return BundleReply(bundle=self._bundle, bundle_pem=self._bundle_pem)
