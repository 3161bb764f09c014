"""Authorization counters, declared on the serving proxy's metrics registry the first time a filter uses it.

``meshbus_authz_requests_total{action, result, policy, dry_run}``: one per decision step that
reported (the enforced decision; each dry run; each AUDIT mark), with the deciding rule id as Envoy
names it (``ns[default]-policy[shelf-readers]-rule[0]``; ``none`` for "no ALLOW rule matched").
``meshbus_ext_authz_requests_total{provider, result}``: checks sent to CUSTOM providers, by outcome
(``ok``, ``denied``, ``error``, ``failed_open``, ``body_too_large``). Sans-IO.
"""

from __future__ import annotations

from typing import Any, Final

from meshbus.telemetry.metrics import Counter, CounterChild, Registry

DECISIONS: Final = "meshbus_authz_requests_total"
EXT_AUTHZ: Final = "meshbus_ext_authz_requests_total"


def _counter(registry: Registry, name: str, help: str, labels: tuple[str, ...]) -> Counter:
    found = registry.get(name)
    if isinstance(found, Counter):
        return found
    return registry.counter(name, help, labels)


class AuthzStats:
    """The counters on one registry, with their children cached by label values."""

    __slots__ = ("_allowed", "_cells", "_denied", "decisions", "ext_authz", "registry")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.decisions = _counter(
            registry,
            DECISIONS,
            "AuthorizationPolicy decisions, by step (action), result, deciding rule and dry run",
            ("action", "result", "policy", "dry_run"),
        )
        self.ext_authz = _counter(
            registry,
            EXT_AUTHZ,
            "Checks sent to CUSTOM (external) authorizers, by provider and outcome",
            ("provider", "result"),
        )
        self._cells: dict[Any, CounterChild] = {}
        # The enforced decision of each request, by deciding rule id: one dict lookup, no key to build.
        self._allowed: dict[str, CounterChild] = {}
        self._denied: dict[str, CounterChild] = {}

    def decided(self, allowed: bool, action: str, policy: str) -> None:
        """The enforced decision (``action``: the step that decided; a rule id is one step's)."""
        cells = self._allowed if allowed else self._denied
        cell = cells.get(policy)
        if cell is None:
            result = "allowed" if allowed else "denied"
            cell = cells[policy] = self.decisions.labels(action, result, policy or "none", "false")
        cell.value += 1

    def decision(self, action: str, result: str, policy: str, dry_run: bool = False) -> None:
        key = (action, result, policy, dry_run)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = self.decisions.labels(
                action, result, policy or "none", str(dry_run).lower()
            )
        cell.value += 1

    def ext(self, provider: str, result: str) -> None:
        key = (provider, result)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = self.ext_authz.labels(provider, result)
        cell.value += 1
