"""meshbus-config over NATS: apply/delete/get/list/history/rollback as a BusService.

Every change runs the same path (`_change`): read the stored state, plan the writes
(plan.py), run cross-resource analysis on the resulting set (admission.py) with the service hosts
discovery's live registry holds (asked once per change; without an answer the analysis goes
without them), then commit all
writes as one atomic JetStream batch in which every write names the revision it was based on.
Either every resource of the request is stored or none is, and a concurrent writer (another
replica, another operator) makes the commit fail as a whole instead of half-applying it. When
the caller did not state revisions, such a conflict is retried from a fresh read (a plain
``meshctl apply`` is last-writer-wins, as kubectl apply is); when it did, the caller gets
``conflict``.

Readiness: endpoints answer ``not_ready`` until the bucket is open; it is opened in the
background with backoff, so the service may start before JetStream is up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from meshbus.bus.config.kubernetes import KubernetesObject
from meshbus.bus.config.resources import KINDS, Resource
from meshbus.bus.config.result import FieldError, Validation
from meshbus.bus.config.validation.registry import validate as validate_semantics
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BadRequestError, ConflictError, NotFoundError
from meshbus.bus.kv import KvOperation
from meshbus.bus.schemas.config import (
    ApplyReply,
    ApplyRequest,
    ConfigChanged,
    DeleteReply,
    DeleteRequest,
    GetRequest,
    HistoryEntry,
    HistoryReply,
    HistoryRequest,
    ListReply,
    ListRequest,
    ResourceRecord,
    ResourceResult,
    RollbackRequest,
    StoredConfig,
)
from meshbus.bus.service import BusService, EndpointSpec
from meshbus.bus.tasks import cancel_and_wait
from meshbus.control.discovery.client import registry_hosts

from . import admission
from .filters import check_plugins
from .kinds import UnknownKindError, resolve_kind
from .manifest import key_of, split_key, to_record, to_stored, utc_iso, utc_now
from .plan import Current, Plan, plan_apply, plan_delete
from .store import ConfigStore

log = logging.getLogger(__name__)

COMPONENT = "config"
MAX_ATTEMPTS = 12  # reads+commits per change when the caller stated no revision and writers race
REGISTRY_TIMEOUT = 0.5
"""How long a change waits for discovery's registry hosts (no replica: analysis goes without)."""


class ConfigService:
    """One meshbus-config replica. ``async with ConfigService(bus):`` serves until exit."""

    def __init__(self, bus: BusConnection, *, history: int = 64, clock: Callable[[], str] = utc_now) -> None:
        self.bus = bus
        self.store = ConfigStore(bus, history=history)
        self.clock = clock
        self.service = BusService(bus, COMPONENT, description="meshbus config store (Galley role)")
        self._opener: asyncio.Task[None] | None = None
        # Changes handled by this replica run one at a time: they would only make each other
        # conflict and retry. Replicas still race each other; the atomic commit settles that.
        self._write_lock = asyncio.Lock()
        for name, rtype, handler in (
            ("apply", ApplyRequest, self.apply),
            ("delete", DeleteRequest, self.delete),
            ("get", GetRequest, self.get),
            ("list", ListRequest, self.list_resources),
            ("history", HistoryRequest, self.history),
            ("rollback", RollbackRequest, self.rollback),
        ):
            self.service.add_endpoint(EndpointSpec(name, rtype, handler, subject=bus.subjects.config(name)))

    # -- lifecycle
    async def start(self) -> None:
        await self.service.start()
        self._opener = asyncio.create_task(self._open_bucket(), name="config-open-bucket")

    async def stop(self) -> None:
        if self._opener is not None:
            await cancel_and_wait([self._opener])
            self._opener = None
        await self.service.stop()

    async def __aenter__(self) -> ConfigService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_ready(self) -> None:
        if self._opener is not None:
            await asyncio.shield(self._opener)

    async def _open_bucket(self) -> None:
        attempt = 0
        while True:
            try:
                await self.store.open()
                break
            except Exception as exc:  # JetStream not up yet, or NATS away: keep trying
                if attempt == 0:
                    log.warning("config bucket %s not available yet (%s); retrying", self.store.bucket, exc)
                await asyncio.sleep(random.random() * min(2.0, 0.05 * 2**attempt))
                attempt = min(attempt + 1, 16)
        self.service.details["bucket"] = self.store.bucket
        self.service.set_ready()

    # -- endpoints
    async def apply(self, req: ApplyRequest) -> ApplyReply:
        loaded = admission.load_documents(req.documents)
        if not loaded.ok:
            raise BadRequestError(admission.render_errors(loaded.validation))
        if not loaded.resources and not loaded.kubernetes:
            raise BadRequestError("no resources found in the request")
        # A Plugin's filter and pluginConfig: against the filters installed here, or a live host's schema.
        plugins = await check_plugins(self.bus, loaded.resources)
        if plugins.errors:
            raise BadRequestError(admission.render_errors(plugins))
        loaded.validation.extend(plugins)
        expected = dict(req.expected_revisions)
        if req.expected_revision:
            if len(loaded.resources) != 1:
                raise BadRequestError(
                    f"a revision can be stated for one resource only; the request has {len(loaded.resources)}"
                )
            r = loaded.resources[0]
            expected[key_of(r.kind, r.namespace, r.name)] = req.expected_revision
        now = self.clock()
        desired = {key_of(*r.key): (r, to_stored(r, updated=now)) for r in loaded.resources}
        results, warnings = await self._change(
            desired, [], expected, dry_run=req.dry_run, kubernetes=loaded.kubernetes
        )
        notes = [w.render() for w in [*loaded.validation.warnings, *warnings]]
        notes += [f"Info: {m.render()}" for m in loaded.validation.infos]
        return ApplyReply(results, notes, req.dry_run)

    async def delete(self, req: DeleteRequest) -> DeleteReply:
        targets = []
        for t in req.targets:
            kind = self._kind(t.kind)
            self._key(kind, t.namespace or "default", t.name)  # refuses names no key can hold
            targets.append((kind, t.namespace or "default", t.name))
        if not targets:
            raise BadRequestError("nothing to delete")
        results, warnings = await self._change(
            {},
            targets,
            dict(req.expected_revisions),
            dry_run=req.dry_run,
            ignore_not_found=req.ignore_not_found,
            force=req.force,
        )
        return DeleteReply(results, [w.render() for w in warnings], req.dry_run)

    async def rollback(self, req: RollbackRequest) -> ApplyReply:
        kind = self._kind(req.kind)
        key = self._key(kind, req.namespace, req.name)
        try:
            entry = await self.store.at(key, req.to_revision)
        except NotFoundError:
            raise NotFoundError(await self._no_such_revision(kind, req, key)) from None
        old = self.store.decode(entry)
        if entry.operation is not KvOperation.PUT or old is None:
            raise BadRequestError(
                f"revision {req.to_revision} of {kind} {req.namespace}/{req.name} is a delete"
            )
        resource, checked = self._revalidate(old, req.to_revision)
        value = to_stored(
            resource, updated=self.clock(), operation="rollback", rolled_back_to=req.to_revision
        )
        expected = {key: req.expected_revision} if req.expected_revision else {}
        results, warnings = await self._change(
            {key: (resource, value)}, [], expected, dry_run=req.dry_run, changed_action="rolled back"
        )
        return ApplyReply(results, [w.render() for w in [*checked.warnings, *warnings]], req.dry_run)

    async def _no_such_revision(self, kind: str, req: RollbackRequest, key: str) -> str:
        ref = f"{kind} {req.namespace}/{req.name}"
        kept = [e for e in await self.store.history(key) if e.operation is KvOperation.PUT]
        if not kept:
            return f"{ref} has no revision {req.to_revision}: the store holds no revision of it"
        revisions = ", ".join(str(e.revision) for e in kept)
        return (
            f"{ref} has no revision {req.to_revision}; it can be rolled back to {revisions} "
            f"(meshctl history {kind.lower()} {req.name} -n {req.namespace})"
        )

    async def get(self, req: GetRequest) -> ResourceRecord:
        kind = self._kind(req.kind)
        current = await self.store.current(self._key(kind, req.namespace, req.name))
        if current is None or current.value is None:
            raise NotFoundError(f'{kind.lower()} "{req.name}" not found in namespace {req.namespace}')
        return to_record(current.value, current.revision)

    async def list_resources(self, req: ListRequest) -> ListReply:
        kind = self._kind(req.kind) if req.kind else "*"
        ns = "*" if req.all_namespaces else (req.namespace or "default")
        if ns != "*":
            self._key("Kind", ns, "name")  # a namespace is one key token: no wildcards smuggled in
        pattern = ">" if kind == "*" and ns == "*" else f"{kind}.{ns}.>"
        state = await self.store.state(pattern)
        items = [to_record(c.value, c.revision) for c in state.values() if c.value is not None]
        items.sort(key=lambda r: (r.kind, r.namespace, r.name))
        return ListReply(items)

    async def history(self, req: HistoryRequest) -> HistoryReply:
        kind = self._kind(req.kind)
        key = self._key(kind, req.namespace, req.name)
        entries = await self.store.history(key)
        if not entries:
            raise NotFoundError(f'{kind.lower()} "{req.name}" has no history in namespace {req.namespace}')
        out = []
        for e in entries:
            when = utc_iso(e.created) if e.created is not None else ""
            if e.operation is not KvOperation.PUT:
                out.append(HistoryEntry(e.revision, e.operation.value, when))
                continue
            try:
                value = self.store.decode(e)
            except BadRequestError:  # written by something else than meshbus-config
                value = None
            if value is None:
                out.append(HistoryEntry(e.revision, "unreadable", when))
                continue
            out.append(
                HistoryEntry(
                    e.revision,
                    value.operation,
                    value.updated or when,
                    value.source_file,
                    value.source_line,
                    value.rolled_back_to,
                )
            )
        return HistoryReply(kind, req.namespace, req.name, entries[-1].revision, out)

    # -- the one change path
    async def _change(
        self,
        desired: dict[str, tuple[Resource, StoredConfig]],
        deletes: Sequence[tuple[str, str, str]],
        expected: dict[str, int],
        *,
        dry_run: bool,
        ignore_not_found: bool = False,
        force: bool = False,
        changed_action: str = "configured",
        kubernetes: Sequence[KubernetesObject] = (),
    ) -> tuple[list[ResourceResult], list[FieldError]]:
        hosts = await registry_hosts(self.bus, timeout=REGISTRY_TIMEOUT)
        async with self._write_lock:
            return await self._change_locked(
                desired,
                hosts or frozenset(),
                deletes,
                expected,
                dry_run=dry_run,
                ignore_not_found=ignore_not_found,
                force=force,
                changed_action=changed_action,
                kubernetes=kubernetes,
            )

    async def _change_locked(
        self,
        desired: dict[str, tuple[Resource, StoredConfig]],
        hosts: frozenset[str],
        deletes: Sequence[tuple[str, str, str]],
        expected: dict[str, int],
        *,
        dry_run: bool,
        ignore_not_found: bool,
        force: bool,
        changed_action: str,
        kubernetes: Sequence[KubernetesObject],
    ) -> tuple[list[ResourceResult], list[FieldError]]:
        stated = bool(expected)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            state = await self.store.state()
            if deletes:
                plan = plan_delete(deletes, state, expected, ignore_not_found=ignore_not_found)
            else:
                values = [v for _, v in desired.values()]
                plan = plan_apply(values, state, expected, changed_action=changed_action)
            self._refuse_conflicts(plan)
            findings = self._analyze(state, desired, plan, hosts, kubernetes)
            if findings.errors and not force:
                raise BadRequestError(admission.render_errors(findings, "the change breaks references"))
            if dry_run or not plan.writes:
                return plan.results, findings.warnings + findings.infos
            try:
                revisions = await self.store.commit(plan.writes)
            except ConflictError:
                if stated or attempt == MAX_ATTEMPTS:
                    raise
                log.debug("concurrent write while committing %d keys; retrying", len(plan.writes))
                # Jittered pause so racing replicas do not collide again in lockstep.
                await asyncio.sleep(random.random() * 0.002 * attempt)
                continue
            await self._announce(plan, revisions)
            return plan.settle(revisions), findings.warnings + findings.infos
        raise ConflictError("concurrent writers kept changing the same resources")  # pragma: no cover

    @staticmethod
    def _refuse_conflicts(plan: Plan) -> None:
        if plan.conflicts:
            n = len(plan.conflicts)
            raise ConflictError(
                f"{n} resource{'s' if n != 1 else ''} changed since the stated revision; nothing was stored:\n"
                + "\n".join("  " + c for c in plan.conflicts)
            )
        if plan.not_found:
            raise NotFoundError("nothing was deleted:\n" + "\n".join("  " + m for m in plan.not_found))

    def _analyze(
        self,
        state: dict[str, Current],
        desired: dict[str, tuple[Resource, StoredConfig]],
        plan: Plan,
        hosts: frozenset[str],
        kubernetes: Sequence[KubernetesObject],
    ) -> Validation:
        """What the change introduces; ``hosts``: the live registry's services; ``kubernetes``: documents
        that came with an apply (its Services)."""
        before: dict[str, Resource] = {}
        for key, current in state.items():
            res = self.store.resource(key, current)
            if res is not None:
                before[key] = res
        after = dict(before)
        for w in plan.writes:
            if w.value is None:
                after.pop(w.key, None)
        # What the request carries, written or unchanged: its findings then name the operator's own
        # file and each field's line, as `meshctl analyze -f` does (stored ones know only the first line).
        for key, (res, _) in desired.items():
            after[key] = res
        changed = {f"{k} {ns}/{n}" for k, ns, n in (split_key(w.key) for w in plan.writes)}
        changed |= {res.ref for res, _ in desired.values()}
        return admission.analysis_delta(
            list(before.values()), list(after.values()), changed, hosts, kubernetes
        )

    async def _announce(self, plan: Plan, revisions: Sequence[int]) -> None:
        try:
            await self.bus.publish(
                self.bus.subjects.config_changed(),
                ConfigChanged(max(revisions), [w.key for w in plan.writes]),
            )
        except Exception as exc:  # a hint only; the KV watch is the source of truth
            log.warning("could not publish config change event: %r", exc)

    # -- helpers
    @staticmethod
    def _key(kind: str, namespace: str, name: str) -> str:
        try:
            return key_of(kind, namespace, name)
        except ValueError as exc:
            raise BadRequestError(str(exc)) from None

    @staticmethod
    def _kind(text: str) -> str:
        if text in KINDS:
            return text
        try:
            return resolve_kind(text)
        except UnknownKindError as exc:
            raise BadRequestError(str(exc)) from None

    @staticmethod
    def _revalidate(old: StoredConfig, revision: int) -> tuple[Resource, Validation]:
        """A rollback target is validated again: the schema may have become stricter since, and what
        meshbus enforces may have changed (its warnings are returned)."""
        ref = f"{old.kind} {old.namespace}/{old.name}"
        try:
            resource = old.to_resource()
        except ValidationError as exc:
            raise BadRequestError(f"revision {revision} of {ref} no longer validates: {exc}") from None
        problems = validate_semantics(resource)
        if problems.errors:
            raise BadRequestError(
                admission.render_errors(problems, f"revision {revision} of {ref} is invalid now")
            )
        return resource, problems
