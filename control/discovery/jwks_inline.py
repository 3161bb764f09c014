"""JWT key sets into RequestAuthentication snapshots: discovery's side of meshbus-policy's key fetching.

meshbus-policy writes the key set of each ``jwksUri`` (or issuer, by OIDC discovery) into the
``<root>_jwks`` bucket (control/policy/jwks_resolver.py). `JwksInliner` holds those records and,
as the config watch turns a stored RequestAuthentication into a model entry, puts each rule's key
set into its ``jwks`` field (Istio's proto: "jwks_uri will be ignored if jwks is set"; istiod does the
same for Envoy). So a proxy gets the keys with its snapshot and never fetches them.

`JwksWatch` (jwks_watch.py) follows the bucket: when a source's usable key set changes (first fetched, rotated, or
past the record's ``expires_at``, the maximum age meshbus-policy gave it), the RequestAuthentications
that name it are modelled again (`ConfigWatch.reapply`), and the push pipeline sends them to the
proxies they select. Expiry is checked here with a timer, not left to meshbus-policy: keys stop being
sent at their maximum age even when no meshbus-policy runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from meshbus.bus import codec
from meshbus.bus.schemas.jwks import JwksRecord, jwks_source

log = logging.getLogger(__name__)

RA_KIND = "RequestAuthentication"


def _rule_source(rule: Mapping[str, Any]) -> str | None:
    return jwks_source(str(rule.get("issuer") or ""), rule.get("jwksUri"), rule.get("jwks"))


class JwksInliner:
    """The usable key set of every source, and the RequestAuthentication values that need one."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.records: dict[str, JwksRecord] = {}
        self.uses: dict[str, set[str]] = {}
        """source -> config keys of the RequestAuthentications that name it."""

    def inline(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        """``value`` with the key sets it needs inline (the same object when nothing changes)."""
        if value.get("kind") != RA_KIND:
            return value
        meta = value.get("metadata") or {}
        key = f"{RA_KIND}.{meta.get('namespace') or 'default'}.{meta.get('name')}"
        spec = value.get("spec") or {}
        rules = spec.get("jwtRules") or []
        now = self.clock()
        out = []
        changed = False
        for rule in rules:
            src = _rule_source(rule) if isinstance(rule, Mapping) else None
            if src is None:
                out.append(rule)
                continue
            self.uses.setdefault(src, set()).add(key)
            rec = self.records.get(src)
            if rec is not None and rec.usable(now):
                out.append({**rule, "jwks": rec.jwks})
                changed = True
            else:
                out.append(rule)
        if not changed:
            return value
        return {**value, "spec": {**spec, "jwtRules": out}}

    def update(self, record: JwksRecord | None, source: str) -> set[str]:
        """Install a record (None: gone); the config keys whose inlined value changes."""
        now = self.clock()
        old = self.records.get(source)
        before = old.jwks if old is not None and old.usable(now) else ""
        if record is None:
            self.records.pop(source, None)
        else:
            self.records[source] = record
        after = record.jwks if record is not None and record.usable(now) else ""
        return set(self.uses.get(source, ())) if before != after else set()

    def expired(self) -> set[str]:
        """Config keys whose inlined keys passed their maximum age (and drop those records' keys)."""
        now = self.clock()
        out: set[str] = set()
        for src, rec in list(self.records.items()):
            if rec.jwks and now >= rec.expires_at:
                self.records[src] = codec.evolve(rec, jwks="")
                out |= self.uses.get(src, set())
                log.warning(
                    "key set %s passed its maximum age: its tokens get 401 until it is fetched again", src
                )
        return out

    def next_expiry(self) -> float | None:
        times = [r.expires_at for r in self.records.values() if r.jwks]
        return min(times) if times else None
