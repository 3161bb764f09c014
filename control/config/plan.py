"""Turn a requested change and the stored state into writes (sans-IO).

Every write carries the revision it is based on, so the atomic commit refuses the whole change
if any key moved between this read and the commit (see meshbus.bus.kv.KeyValueStore.commit).
A resource whose content equals what is stored is not written (no new revision).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshbus.bus.schemas.config import ResourceResult, StoredConfig

from .kinds import group_of
from .manifest import key_of


@dataclass(frozen=True, slots=True)
class Current:
    """A key's latest message: a value, or a delete marker (``value`` None)."""

    revision: int
    value: StoredConfig | None

    @property
    def live(self) -> bool:
        return self.value is not None


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    key: str
    value: StoredConfig | None
    """None deletes the key."""
    last: int
    """Revision the write is based on: the key's latest message, 0 if it never had one."""


@dataclass(slots=True)
class Plan:
    writes: list[PlannedWrite] = field(default_factory=list)
    results: list[ResourceResult] = field(default_factory=list)
    """One per requested resource, in request order; revisions of writes filled in by `settle`."""
    conflicts: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)

    def settle(self, revisions: Sequence[int]) -> list[ResourceResult]:
        """Results with the revisions the commit returned (in write order)."""
        by_key = {w.key: rev for w, rev in zip(self.writes, revisions, strict=True)}
        out = []
        for r in self.results:
            key = key_of(r.kind, r.namespace, r.name)
            if key in by_key:
                r = ResourceResult(
                    r.kind, r.group, r.namespace, r.name, by_key[key], r.action, r.previous_revision
                )
            out.append(r)
        return out


def _conflict(ref: str, expected: int, current: Current | None) -> str | None:
    if current is not None and not current.live and expected == current.revision:
        return None  # the caller saw the delete marker: based on "deleted at revision N"
    stored = current.revision if current is not None and current.live else 0
    if expected == stored:
        return None
    if stored == 0:
        return f"{ref}: revision {expected} was expected but the resource does not exist (any more)"
    if expected == 0:
        return f"{ref}: the resource was expected not to exist, but revision {stored} is stored"
    return (
        f"{ref}: revision {expected} was expected but revision {stored} is stored "
        "(it changed since you read it: get it again, then re-apply)"
    )


def plan_apply(
    desired: Sequence[StoredConfig],
    state: Mapping[str, Current],
    expected: Mapping[str, int],
    *,
    changed_action: str = "configured",
) -> Plan:
    """Writes for applying ``desired`` (``created``/``configured``/``unchanged`` per resource)."""
    plan = Plan()
    for value in desired:
        key = key_of(value.key_kind, value.namespace, value.name)
        ref = f"{value.key_kind} {value.namespace}/{value.name}"
        current = state.get(key)
        if key in expected:
            problem = _conflict(ref, expected[key], current)
            if problem:
                plan.conflicts.append(problem)
                continue
        group = group_of(value.key_kind)
        last = current.revision if current is not None else 0
        if current is not None and current.value is not None:
            if current.value.content() == value.content():
                plan.results.append(
                    ResourceResult(
                        value.key_kind,
                        group,
                        value.namespace,
                        value.name,
                        current.revision,
                        "unchanged",
                        current.revision,
                    )
                )
                continue
            # Keep the creation time across updates; a rollback or re-create after delete starts anew.
            value = _with_created(value, current.value.created)
            action, previous = changed_action, current.revision
        else:
            action, previous = "created", 0
        plan.writes.append(PlannedWrite(key, value, last))
        plan.results.append(
            ResourceResult(value.key_kind, group, value.namespace, value.name, 0, action, previous)
        )
    return plan


def _with_created(value: StoredConfig, created: str) -> StoredConfig:
    if not created or created == value.created:
        return value
    return dataclasses.replace(value, created=created)


def plan_delete(
    targets: Sequence[tuple[str, str, str]],
    state: Mapping[str, Current],
    expected: Mapping[str, int],
    *,
    ignore_not_found: bool = False,
) -> Plan:
    """Delete markers for every live target; missing ones go to ``not_found`` unless ignored."""
    plan = Plan()
    seen: set[str] = set()
    for kind, namespace, name in targets:
        key = key_of(kind, namespace, name)
        if key in seen:
            continue
        seen.add(key)
        ref = f"{kind} {namespace}/{name}"
        current = state.get(key)
        if key in expected:
            problem = _conflict(ref, expected[key], current)
            if problem:
                plan.conflicts.append(problem)
                continue
        if current is None or current.value is None:
            if not ignore_not_found:
                plan.not_found.append(
                    f'{kind.lower()}.{group_of(kind)} "{name}" not found in namespace {namespace}'
                )
            continue
        plan.writes.append(PlannedWrite(key, None, current.revision))
        plan.results.append(
            ResourceResult(kind, group_of(kind), namespace, name, 0, "deleted", current.revision)
        )
    return plan
