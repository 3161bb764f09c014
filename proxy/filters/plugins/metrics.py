"""A LOCAL Plugin's own metrics (``meshbus.plugins.api.FilterMetrics``), into the worker's registry.

Apart from bindings.py so that a worker without a Plugin does not import the plugin SDK for it."""

from __future__ import annotations

from typing import Any

from meshbus.plugins.api import FilterMetrics


class RegistryMetrics(FilterMetrics):
    """A filter's own metrics, into the worker's registry."""

    def __init__(self, ref: str, events: Any, values: Any) -> None:
        self.ref = ref
        self._events = events
        self._values = values

    def count(self, event: str, amount: float = 1) -> None:
        self._events.labels(self.ref, event).inc(amount)

    def observe(self, name: str, value: float) -> None:
        self._values.labels(self.ref, name).observe(value)
